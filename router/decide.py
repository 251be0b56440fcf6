"""The decision: `RuleSet.decide` (first matching route wins) and the record that explains it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from intake.message import Message, RouteDecision, RouteDelivery, RouteTrial, Sla

from .compile import CompiledRoute, render_value
from .index import ChannelPlan, Narrowed, screened_false
from .models import RoutingConfig
from .paths import MISSING

# Decisions stamped on messages keep `tried` short; /explain asks for all of it (`full`).
MAX_TRIED = 20
# `saw` shows what a condition read; a long text is cut so the decision record stays small.
SAW_MAX_CHARS = 200
SAW_MAX_ITEMS = 20


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

    def decide(self, message: Message, *, full: bool = False,
               max_tried: int | None = MAX_TRIED) -> RouteDecision:
        """First matching route wins, else the default route; the record explains why.

        `tried` ends with the route that matched and what its conditions saw. Before it, the
        routes that did not match, each with the first condition that was false: at most
        `max_tried` entries in all and without `saw` for the decision stamped on a message;
        every route, each with the value its failed condition saw, when `full` or
        `max_tried=None` (/explain).
        """
        full = full or max_tried is None
        keep_before = len(self.routes) if full else max(1, max_tried or MAX_TRIED) - 1
        failed_at: dict[int, int] = {}
        ruled_out: list[Narrowed] = []
        matched = self.default
        plan = self.plans.get(message.channel)
        for route in plan.candidates(message, ruled_out) if plan else ():
            failed = route.first_failure(message)
            if failed < 0:
                matched = route
                break
            if route.position < keep_before:
                failed_at[route.position] = failed
        tried: list[RouteTrial] = []
        before = min(matched.position, keep_before)
        known_false = screened_false(ruled_out) if ruled_out and before else None
        for route in self.routes[:before]:
            index = failed_at.get(route.position)
            if index is None:  # skipped by the channel, a lookup or a screen: find what was false
                known = known_false.get(route.position, -1) if known_false else -1
                index = max(route.failing_condition(message, known), 0)
            if full:
                condition = route.conditions[index]
                tried.append(RouteTrial.model_construct(
                    route=route.id, matched=False, failed=condition.text,
                    saw={condition.label: _saw(condition.read(message))}))
            else:
                # Built once at load, shared by decisions: a decision record is read-only.
                tried.append(route.failures[index])
        saw = {c.label: _saw(c.read(message)) for c in matched.conditions}
        tried.append(RouteTrial.model_construct(route=matched.id, matched=True, failed=None,
                                                saw=saw))
        target = matched.target
        return RouteDecision.model_construct(
            decision_id=new_decision_id(),
            revision=self.revision,
            route=matched.id,
            tried=tried,
            mode=target.mode,
            deliveries=[RouteDelivery.model_construct(desk=d, skill_group=g, role=r)
                        for d, g, r in target.deliveries],
            priority=target.priority,
            category=target.category,
            tags=list(target.tags),
            sla=Sla.model_construct(policy=target.sla) if target.sla else None,
            explanation=self._explain(matched, saw),
        )

    def _explain(self, route: CompiledRoute, saw: dict[str, Any]) -> str:
        if route is self.default:
            before = len(self.routes)
            why = ("no route matched" if before else "no routes are declared") + (
                f" ({before} tried)" if before else "") + "; the default route applies"
        else:
            if route.conditions:
                parts = [c.text + (f" (saw {render_value(saw[c.label])})" if c.show_saw else "")
                         for c in route.conditions]
                why = f"route '{route.id}' matched because " + " and ".join(parts)
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
                    "when": [c.text for c in route.conditions], **route.target.as_dict()}

        config = self.config
        return {
            "revision": self.revision,
            "loaded_at": self.loaded_at.isoformat(),
            "source": self.source,
            "desks": [d.model_dump(exclude_none=True) for d in config.desks],
            "skill_groups": [g.model_dump(exclude_none=True) for g in config.skill_groups],
            "categories": [c.model_dump() for c in config.categories],
            "sla_policies": [p.id for p in config.sla_policies],
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


def _saw(value: Any) -> Any:
    """The value a condition read, small and JSON-ready for the decision record."""
    if value is MISSING or value is None or isinstance(value, bool | int | float):
        return None if value is MISSING else value
    if isinstance(value, str):
        return value if len(value) <= SAW_MAX_CHARS else value[:SAW_MAX_CHARS] + "…"
    if isinstance(value, list | tuple):
        return [_saw(item) for item in value[:SAW_MAX_ITEMS]]
    if isinstance(value, BaseModel):
        return _saw(value.model_dump(mode="json", exclude_none=True))
    if isinstance(value, dict):
        return {str(k): _saw(v) for k, v in list(value.items())[:SAW_MAX_ITEMS]}
    return str(value)
