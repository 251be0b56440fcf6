"""Inline tests (`tests:` on a route or at the top level): a message, a customer, what to expect.

`message` is any subset of the common message (the rest filled with neutral values), the
`customer` snapshot is a `hit` when given and a `miss` when absent; `expect` compares only the
keys it names (deliveries in order, on the keys each entry names).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from intake.message import Message, RouteDecision

from .decide import RuleSet
from .models import RuleTest

TEST_DEFAULTS: dict[str, Any] = {
    "channel": "webform", "account": "test", "kind": "message", "text": "",
    "sender": {"identities": []}, "received_at": datetime(2026, 1, 5, 2, 0, tzinfo=UTC),
}


def message_from_test(data: dict[str, Any]) -> Message:
    """A full message from the subset a test gives."""
    merged = {**TEST_DEFAULTS, **data}
    if "kind" not in data and "form" in data:
        merged["kind"] = "form_submission"
    merged.setdefault("idempotency_key", f"{merged['channel']}:{merged['account']}:test")
    return Message.model_validate(merged)


def compare(expect: Any, decision: RouteDecision) -> list[str]:
    """What differs, as `key: expected X, got Y`; empty when the decision fits."""
    diffs: list[str] = []
    got: dict[str, Any] = {
        "route": decision.route, "mode": decision.mode, "priority": decision.priority,
        "category": decision.category, "tags": decision.tags,
        "sla_policy": decision.sla.policy if decision.sla else None,
        "escalation": decision.escalation.timeline if decision.escalation else None,
        "first_response_due": decision.sla.first_response_due if decision.sla else None,
        "resolution_due": decision.sla.resolution_due if decision.sla else None,
    }
    for key in expect.model_fields_set:
        wanted = getattr(expect, key)
        if key == "deliveries":
            actual = [d.model_dump(mode="json") for d in decision.deliveries]
            shown = [{k: a.get(k) for k in w} for w, a in zip(wanted, actual, strict=False)]
            if len(actual) != len(wanted) or shown != [
                    {k: str(v) if k == "due" else v for k, v in w.items()} for w in wanted]:
                brief = [{k: a.get(k) for k in ("desk", "skill_group", "role")} for a in actual]
                diffs.append(f"deliveries: expected {wanted}, got {brief}")
        elif got[key] != wanted:
            diffs.append(f"{key}: expected {_show(wanted)}, got {_show(got[key])}")
    return diffs


def _show(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else repr(value)


def run_test(rules: RuleSet, test: RuleTest) -> tuple[RouteDecision | None, list[str]]:
    try:
        message = message_from_test(test.message)
    except ValidationError as exc:
        return None, ["message: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())]
    decision = rules.decide(message, test.customer, max_tried=None)
    return decision, compare(test.expect, decision)


def run_inline_tests(rules: RuleSet) -> list[tuple[str, str, list[str]]]:
    """(route, test name or index, differences) for every inline test of the file."""
    results: list[tuple[str, str, list[str]]] = []
    config = rules.config
    owners: list[tuple[str, list[RuleTest]]] = [(r.id, r.tests) for r in config.routes]
    owners.append(("default", config.default_route.tests))
    owners.append(("(file)", config.tests))
    for route_id, tests in owners:
        for i, test in enumerate(tests):
            _, diffs = run_test(rules, test)
            results.append((route_id, test.name or f"#{i + 1}", diffs))
    return results
