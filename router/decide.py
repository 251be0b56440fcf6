"""The decision: `RuleSet.decide` (first matching route wins) and the record that explains it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from intake.calendars import Calendar
from intake.message import DecisionCustomer, Message, RouteDecision, RouteTrial, Sla

from .compile import CompiledRoute
from .evaluate import CUSTOMER, SAW_MAX_CHARS, SAW_MAX_ITEMS
from .expr import literal_source
from .index import ChannelPlan, Narrowed, screened_false
from .models import RoutingConfig
from .paths import MISSING
from .plan import Planner, as_delivery, split_pick

# Decisions stamped on messages keep `tried` short; /explain asks for all of it (`full`).
MAX_TRIED = 20
__all__ = ["MAX_TRIED", "SAW_MAX_CHARS", "SAW_MAX_ITEMS", "RuleSet", "customer_snapshot",
           "new_decision_id"]


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The validated, compiled rules of one config revision; `decide` is pure and fast."""

    revision: str
    config: RoutingConfig
    routes: tuple[CompiledRoute, ...]
    default: CompiledRoute
    # channel -> the routes that can match its messages
    plans: dict[str, ChannelPlan]
    loaded_at: datetime
    source: str  # the file(s) it came from, for /rules
    planner: Planner | None = None
    calendars: Mapping[str, Calendar] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # lint warnings of this revision

    @property
    def label(self) -> str | None:
        return self.config.label

    @property
    def reads_customer(self) -> bool:
        """Whether any route's condition, or any split's `sticky_by`, reads `customer.*`."""
        return any(r.reads_customer or r.picks_by_customer for r in self.routes) \
            or self.default.picks_by_customer

    def decide(self, message: Message, customer: Mapping[str, Any] | None = None, *,
               full: bool = False, max_tried: int | None = MAX_TRIED,
               lookup: str | None = None) -> RouteDecision:
        """First matching route wins, else the default route; the record explains why.

        `customer` is the snapshot the `customer.*` keys read (None: no customer known;
        `lookup` says why: miss, timeout, error, backoff, skipped). `tried` ends with the
        route that matched and what its conditions saw. Before it, the routes that did not
        match, each with the first sub-expression that was false: at most `max_tried` entries
        in all and without `saw` for the decision stamped on a message; every route, each with
        what its failed sub-expression saw, when `full` or `max_tried=None` (/explain).
        """
        snapshot = customer_snapshot(customer, lookup)
        token = CUSTOMER.set(snapshot)
        try:
            return self._decide(message, snapshot, full=full or max_tried is None,
                                max_tried=max_tried)
        finally:
            CUSTOMER.reset(token)

    def decide_unless_customer(self, message: Message) -> RouteDecision | None:
        """The decision, `customer.lookup` `skipped`, when reaching it reads no customer key;
        None when it does: look the sender up, then `decide` with what was found.

        Pure, like `decide`. Whether the customer matters is found by deciding with a probe
        bound as the customer: the candidate routes are tried in file order (after the channel
        plan, word index and pattern screens), and a route's conjuncts in order, so the first
        read of a `customer.*` key is one the decision depends on: a route before the match
        that reads the customer once its other conjuncts before it held, the match itself, or
        a split picking by a customer key. A route after the match is never evaluated, and a
        route whose earlier conjunct is false never reads its customer conjunct.
        """
        keep_before = max(1, MAX_TRIED) - 1
        failed_at: dict[int, int] = {}
        ruled_out: list[Narrowed] = []
        token = CUSTOMER.set(_PROBE)
        try:
            matched = self._match(message, keep_before, failed_at, ruled_out)
        except CustomerNeeded:
            return None
        finally:
            CUSTOMER.reset(token)
        if matched.picks_by_customer:
            return None
        snapshot = _NO_CUSTOMER["skipped"]
        token = CUSTOMER.set(snapshot)
        try:
            return self._recorded(message, snapshot, matched, failed_at, ruled_out,
                                  full=False, keep_before=keep_before, without_customer=True)
        finally:
            CUSTOMER.reset(token)

    def _match(self, message: Message, keep_before: int, failed_at: dict[int, int],
               ruled_out: list[Narrowed]) -> CompiledRoute:
        """The first candidate route whose conditions all hold, else the default; fills
        `failed_at` (position -> first false condition) for the routes it tried."""
        plan = self.plans.get(message.channel)
        for route in plan.candidates(message, ruled_out) if plan else ():
            failed = route.first_failure(message)
            if failed < 0:
                return route
            if route.position < keep_before:
                failed_at[route.position] = failed
        return self.default

    def _decide(self, message: Message, snapshot: Mapping[str, Any], *, full: bool,
                max_tried: int | None) -> RouteDecision:
        keep_before = len(self.routes) if full else max(1, max_tried or MAX_TRIED) - 1
        failed_at: dict[int, int] = {}
        ruled_out: list[Narrowed] = []
        matched = self._match(message, keep_before, failed_at, ruled_out)
        # Not looked up: the customer's conditions are unknown, not false.
        return self._recorded(message, snapshot, matched, failed_at, ruled_out, full=full,
                              keep_before=keep_before,
                              without_customer=snapshot.get("lookup") == "skipped")

    def _recorded(self, message: Message, snapshot: Mapping[str, Any], matched: CompiledRoute,
                  failed_at: dict[int, int], ruled_out: list[Narrowed], *, full: bool,
                  keep_before: int, without_customer: bool = False) -> RouteDecision:
        tried: list[RouteTrial] = []
        before = min(matched.position, keep_before)
        known_false = screened_false(ruled_out) if ruled_out and before else None
        for route in self.routes[:before]:
            index = failed_at.get(route.position)
            if index is None:  # skipped by the channel, a lookup or a screen: find what was false
                known = known_false.get(route.position, -1) if known_false else -1
                index = max(route.failing_condition(message, known,
                                                    without_customer=without_customer), 0)
            if full:
                failed_text, saw = route.conditions[index].explain(message)
                tried.append(RouteTrial.model_construct(
                    route=route.id, matched=False, failed=failed_text, saw=saw))
            else:
                # Built once at load, shared by decisions: a decision record is read-only.
                tried.append(route.failures[index])
        saw = {}
        for condition in matched.conditions:
            saw.update(condition.saw(message))
        tried.append(RouteTrial.model_construct(route=matched.id, matched=True, failed=None,
                                                saw=saw))
        return self._record(message, matched, tried, snapshot)

    def _record(self, message: Message, matched: CompiledRoute, tried: list[RouteTrial],
                snapshot: Mapping[str, Any]) -> RouteDecision:
        target = matched.target
        received = message.received_at
        chosen = target.deliveries
        if target.mode == "split":
            value = target.sticky_by(message) if target.sticky_by is not None else None
            key = message.idempotency_key if value is None or value is MISSING else str(value)
            desk, group, _, _, weight = split_pick(chosen, key)
            chosen = ((desk, group, "owner", None, weight),)
        if chosen is target.deliveries and target.static_deliveries is not None:
            # Built once at load (no overflow times to fill in); a record is read-only.
            deliveries = list(target.static_deliveries)
        else:
            deliveries = [as_delivery(d, received) for d in chosen]
        owner = deliveries[0].desk
        planner = self.planner
        sla = None
        if target.sla:
            sla = (planner.sla(target.sla, owner, received, target.priority) if planner
                   else Sla.model_construct(policy=target.sla))
        escalation = (planner.escalation(target.escalation, owner, received)
                      if planner and target.escalation else None)
        return RouteDecision.model_construct(
            decision_id=new_decision_id(),
            revision=self.revision,
            label=self.config.label,
            clock=received,
            customer=_NOBODY.get(id(snapshot)) or DecisionCustomer.model_construct(**{
                k: snapshot.get(k) for k in DECISION_CUSTOMER_KEYS}),
            route=matched.id,
            tried=tried,
            mode=target.mode,
            deliveries=deliveries,
            priority=target.priority,
            category=target.category,
            tags=list(target.tags),
            sla=sla,
            escalation=escalation,
            taken_when=target.taken_when,
            explanation=self._explain(matched, tried[-1].saw),
        )

    def _explain(self, route: CompiledRoute, saw: dict[str, Any]) -> str:
        if route is self.default:
            before = len(self.routes)
            why = ("no route matched" if before else "no routes are declared") + (
                f" ({before} tried)" if before else "") + "; the default route applies"
        else:
            if route.conditions:
                seen = ", ".join(f"{k} = {literal_source(v)}" for k, v in saw.items())
                parts = [c.text for c in route.conditions]
                why = f"route '{route.id}' matched because " + " and ".join(parts) + (
                    f" (saw {seen})" if seen else "")
            else:
                why = f"route '{route.id}' matched: it has no conditions"
            if route.position:
                why += (f", after {route.position} earlier route"
                        f"{'s' if route.position > 1 else ''} did not match")
        return f"{why} → {route.target.describe()}"

    def summary(self) -> dict[str, Any]:
        """What `GET /rules` shows: the revision and every route as people read it."""
        def route_dict(route: CompiledRoute) -> dict[str, Any]:
            return {"id": route.id, "description": route.description,
                    "when": route.tree.text if route.tree else None,
                    "conditions": [c.text for c in route.conditions], **route.target.as_dict()}

        config = self.config
        return {
            "revision": self.revision,
            "label": config.label,
            "loaded_at": self.loaded_at.isoformat(),
            "source": self.source,
            "warnings": list(self.warnings),
            "desks": [d.model_dump(exclude_none=True) for d in config.desks],
            "skill_groups": [g.model_dump(exclude_none=True) for g in config.skill_groups],
            "strategies": {g.id: g.strategy for g in config.skill_groups},
            "categories": [c.model_dump() for c in config.categories],
            "calendars": [c.model_dump(mode="json", exclude_none=True, by_alias=True)
                          for c in config.calendars],
            "sla_policies": [p.model_dump(mode="json", exclude_none=True)
                             for p in config.sla_policies],
            "escalations": [e.model_dump(mode="json", exclude_none=True)
                            for e in config.escalations],
            "routes": [route_dict(r) for r in self.routes],
            "default_route": route_dict(self.default),
        }


def new_decision_id() -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so decision ids sort by when they were made."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = ((millis & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | ((rand >> 62) & 0xFFF) << 64
             | 0b10 << 62 | rand & ((1 << 62) - 1))
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


DECISION_CUSTOMER_KEYS = ("lookup", "id", "vip_level", "language", "tickets_count",
                          "open_tickets_count")


def customer_snapshot(customer: Mapping[str, Any] | None,
                      lookup: str | None = None) -> dict[str, Any]:
    """What `customer.*` reads: the given snapshot (`hit`), or nobody known (`miss`, or the
    lookup's failure: then every key but `lookup` is null)."""
    if customer is not None:
        known = dict(customer)
        known.setdefault("known", True)
        known.setdefault("fields", {})
        known["lookup"] = lookup or known.get("lookup") or "hit"
        return known
    return _NO_CUSTOMER.get(lookup or "miss") or _nobody(lookup or "miss")


def _nobody(result: str) -> dict[str, Any]:
    if result == "miss":
        return {"lookup": "miss", "known": False, "tickets_count": 0, "open_tickets_count": 0,
                "id": None, "vip_level": None, "language": None, "fields": {}}
    return {"lookup": result, "known": None, "id": None, "vip_level": None, "language": None,
            "tickets_count": None, "open_tickets_count": None, "fields": None}


# No customer known: one snapshot per lookup result, and its record part, built once (read-only).
_NO_CUSTOMER = {result: _nobody(result) for result in
                ("miss", "timeout", "error", "backoff", "skipped")}
_NOBODY = {id(snapshot): DecisionCustomer.model_construct(**{
    k: snapshot.get(k) for k in DECISION_CUSTOMER_KEYS}) for snapshot in _NO_CUSTOMER.values()}


class CustomerNeeded(Exception):
    """Deciding read a `customer.*` key while the customer was not looked up."""


class _CustomerProbe(Mapping[str, Any]):
    """Bound as the customer by `decide_unless_customer`: reading any key of it stops the
    decision, which then needs the customer looked up."""

    def __getitem__(self, key: str) -> Any:
        raise CustomerNeeded(key)

    def get(self, key: str, default: Any = None) -> Any:
        raise CustomerNeeded(key)

    def __iter__(self) -> Iterator[str]:
        raise CustomerNeeded("*")

    def __len__(self) -> int:
        raise CustomerNeeded("*")


_PROBE = _CustomerProbe()
