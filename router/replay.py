"""`intake route replay`: what candidate rules would change on the traffic stored since a time.

The ticket core's `GET /api/v1/decisions` gives each stored inbound message with the decision
recorded for it and the customer snapshot that decision read. Each is decided again by the
rules in force (`--old`, default the gateway's) and by the candidate (`--rules`): `changed`
counts messages whose route, desks or SLA policy differ (a new revision alone is no change);
`unchanged_recorded_mismatch` counts recorded decisions the old rules do not reproduce (0 for
the same revision: decisions are a pure function of message, customer and rules).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import aiohttp

from intake.message import Message, RouteDecision

from .decide import DECISION_CUSTOMER_KEYS
from .rules import RuleSet

CHANGES_SHOWN = 100  # `changes` lists at most this many; the counts cover all


def outcome(decision: Mapping[str, Any] | RouteDecision) -> dict[str, Any]:
    """What replay compares: the route, its desks in order and the SLA policy."""
    data = decision.model_dump(mode="json") if isinstance(decision, RouteDecision) else decision
    sla = data.get("sla") or {}
    return {"route": data.get("route"),
            "desks": [d.get("desk") for d in data.get("deliveries") or []],
            "sla_policy": sla.get("policy")}


def recorded_customer(snapshot: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, str]:
    """The snapshot a recorded decision read, as `decide` takes it again."""
    if not snapshot:
        return None, "skipped"
    lookup = str(snapshot.get("lookup") or "skipped")
    if lookup != "hit":
        return None, lookup
    return {k: snapshot.get(k) for k in DECISION_CUSTOMER_KEYS if k != "lookup"}, "hit"


def replay(items: Iterable[Mapping[str, Any]], old: RuleSet, new: RuleSet) -> dict[str, Any]:
    replayed = changed = mismatched = 0
    by_route: Counter[str] = Counter()
    desk_shift: Counter[str] = Counter()
    hit: set[str] = set()
    changes: list[dict[str, Any]] = []
    for item in items:
        message = Message.model_validate(item["message"])
        customer, lookup = recorded_customer(item.get("customer"))
        before = outcome(old.decide(message, customer, lookup=lookup))
        after = outcome(new.decide(message, customer, lookup=lookup))
        replayed += 1
        hit.add(after["route"])
        if item.get("decision") and outcome(item["decision"]) != before:
            mismatched += 1
        if before != after:
            changed += 1
            by_route[f"{before['route']}→{after['route']}"] += 1
            for desk in before["desks"]:
                desk_shift[desk] -= 1
            for desk in after["desks"]:
                desk_shift[desk] += 1
            if len(changes) < CHANGES_SHOWN:
                changes.append({"message_id": item.get("message_id"),
                                "ticket_number": item.get("ticket_number"),
                                "old": before, "new": after})
    return {
        "replayed": replayed, "changed": changed, "unchanged_recorded_mismatch": mismatched,
        "by_route": dict(by_route.most_common()),
        "desk_shift": {desk: n for desk, n in sorted(desk_shift.items()) if n},
        "never_hit": [r.id for r in new.routes if r.id not in hit],
        "changes": changes}


async def stored_decisions(base_url: str, token: str | None, since: str,
                           until: str | None = None, *, page_size: int = 1000,
                           ) -> AsyncIterator[dict[str, Any]]:
    """Every item of `GET /api/v1/decisions` in the window, page after page."""
    params: dict[str, str] = {"since": since, "limit": str(page_size)}
    if until:
        params["until"] = until
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(headers=headers) as http:
        while True:
            async with http.get(f"{base_url.rstrip('/')}/api/v1/decisions",
                                params=params) as response:
                if response.status != 200:
                    raise ReplayUnavailable(
                        f"the ticket core answered {response.status}: {await response.text()}")
                page = await response.json()
            for item in page["items"]:
                yield item
            if not page.get("next"):
                return
            params = {"cursor": page["next"], "limit": str(page_size),
                      **({"until": until} if until else {})}


class ReplayUnavailable(RuntimeError):
    """The ticket core did not give the stored decisions."""


def render(report: Mapping[str, Any]) -> str:
    lines = [f"replayed {report['replayed']}, changed {report['changed']}, recorded decisions "
             f"the old rules do not reproduce {report['unchanged_recorded_mismatch']}"]
    for change, count in report["by_route"].items():
        lines.append(f"  {change}: {count}")
    if report["desk_shift"]:
        lines.append("desks: " + ", ".join(f"{desk} {n:+d}"
                                           for desk, n in report["desk_shift"].items()))
    if report["never_hit"]:
        lines.append("never hit by the candidate: " + ", ".join(report["never_hit"]))
    for change in report["changes"]:
        lines.append(f"  #{change['ticket_number']} {change['message_id']}: "
                     f"{change['old']['route']} {change['old']['desks']} → "
                     f"{change['new']['route']} {change['new']['desks']}")
    return "\n".join(lines)
