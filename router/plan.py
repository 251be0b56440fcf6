"""What a decision plans in time: SLA due times and warnings, the escalation schedule, overflow
moves, and the split pick. Pure functions of the message's `received_at` and the rules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta

from intake.calendars import ALWAYS, Calendar
from intake.durations import format_duration
from intake.message import (
    EscalationPlan,
    EscalationStepPlan,
    RouteDelivery,
    Sla,
    SlaWarning,
)

from .compile import Resolved
from .models import Escalation, RoutingConfig, SlaPolicy


def _working_or_none(calendar: Calendar, start: datetime, elapsed: timedelta) -> datetime | None:
    """None when the calendar has no working time for years ahead (a calendar of holidays
    only): the decision goes on without a due time rather than fail the message."""
    try:
        return calendar.add_working(start, elapsed)
    except ValueError:
        return None


def split_bucket(value: str) -> int:
    """`int.from_bytes(sha256(value as UTF-8)[:8], "big") % 100`: the same value, the same
    bucket, on every router and every revision."""
    return int.from_bytes(hashlib.sha256(value.encode("utf-8")).digest()[:8], "big") % 100


def split_pick(deliveries: tuple[Resolved, ...], value: str) -> Resolved:
    """The first delivery whose cumulative weight exceeds the value's bucket."""
    bucket = split_bucket(value)
    total = 0
    for delivery in deliveries:
        total += delivery[4] or 0
        if total > bucket:
            return delivery
    return deliveries[-1]  # weights sum to 100 (checked at load): not reached


def as_delivery(d: Resolved, received_at: datetime) -> RouteDelivery:
    after = d[3]
    return RouteDelivery.model_construct(
        desk=d[0], skill_group=d[1], role=d[2],
        after=format_duration(after) if after is not None else None,
        due=received_at + after if after is not None else None)


class Planner:
    """The rules' calendars, policies and timelines, ready for a decision to read."""

    def __init__(self, config: RoutingConfig, calendars: Mapping[str, Calendar]) -> None:
        self.calendars = calendars
        self.policies = {p.id: p for p in config.sla_policies}
        self.escalations = {e.id: e for e in config.escalations}
        self.desk_calendar = {d.id: d.calendar for d in config.desks}
        self.default_group = {d.id: d.default_skill_group for d in config.desks}

    def _calendar(self, named: str | None, desk: str) -> tuple[str, Calendar]:
        cal_id = named or self.desk_calendar.get(desk) or "always"
        return cal_id, self.calendars.get(cal_id, ALWAYS)

    def sla(self, policy_id: str, desk: str, received_at: datetime,
            priority: str | None = None) -> Sla:
        policy: SlaPolicy = self.policies[policy_id]
        chosen = policy.targets_for(priority)
        cal_id, calendar = self._calendar(policy.calendar, desk)

        def after(elapsed: timedelta) -> datetime | None:
            if policy.business_hours:
                return _working_or_none(calendar, received_at, elapsed)
            return received_at + elapsed

        warnings: list[SlaWarning] = []
        dues: dict[str, datetime | None] = {}
        for target, length in (("first_response", chosen.first_response),
                               ("resolution", chosen.resolution)):
            dues[target] = after(length) if length is not None else None
            if length is None:
                continue
            warn_at: timedelta | None = None
            if policy.warn_before is not None and policy.warn_before < length:
                warn_at = length - policy.warn_before
            elif policy.warn_at is not None:
                warn_at = length * policy.warn_at
            warn_due = after(warn_at) if warn_at is not None else None
            if warn_due is not None:
                warnings.append(SlaWarning.model_construct(target=target, at=warn_due))
        return Sla.model_construct(
            policy=policy_id, business_hours=policy.business_hours,
            calendar=cal_id if policy.business_hours else None,
            first_response_due=dues["first_response"], resolution_due=dues["resolution"],
            warnings=warnings)

    def escalation(self, timeline_id: str, desk: str, received_at: datetime) -> EscalationPlan:
        """Planned: each step starts when the one before is due (the worst case, nobody
        acting); the ticket core keeps the actual schedule."""
        timeline: Escalation = self.escalations[timeline_id]
        _, calendar = self._calendar(timeline.calendar, desk)

        def after(start: datetime | None, elapsed: timedelta) -> datetime | None:
            if start is None:
                return None
            if timeline.business_hours:
                return _working_or_none(calendar, start, elapsed)
            return start + elapsed

        steps: list[EscalationStepPlan] = []
        start: datetime | None = received_at
        for step in timeline.steps:
            due = after(start, step.within)
            target = None
            if step.target is not None:
                group = step.target.skill_group or self.default_group.get(step.target.desk)
                target = RouteDelivery.model_construct(desk=step.target.desk,
                                                       skill_group=group, role="owner",
                                                       after=None, due=None)
            steps.append(EscalationStepPlan.model_construct(id=step.id, target=target, due=due))
            start = due
        return EscalationPlan.model_construct(
            timeline=timeline_id,
            deadline=after(received_at, timeline.deadline) if timeline.deadline else None,
            hard_deadline=(after(received_at, timeline.hard_deadline)
                           if timeline.hard_deadline else None),
            steps=steps)
