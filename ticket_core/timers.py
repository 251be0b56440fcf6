"""What a ticket's decision plans in time: its SLA, its escalation timeline and their timers.

Pure functions of the router's decision (`RouteDecision.sla`, `.escalation`, overflow
deliveries), the message's `received_at` and the timelines of the rules (`Timelines`); the
planner (planner.py) writes their rows in the transaction that creates the ticket, and the
scheduler (scheduler.py) fires them. Timer kinds and their `ref`:

- `overflow`: the overflow delivery's desk (`data.skill_group`, `data.taken_when`: what
  stops it, `acknowledged` or `first_response`), due at its `due`;
- `sla_warning`, `sla_breach`: `first_response`, `next_response` or `resolution`
  (`data.cycle`: the next-response cycle), planned and re-planned from the ticket's clocks
  (sla.py); `sla_message`: a customer message the clocks have not counted yet;
- `escalation_step`: `<timeline>.<step>`, due `within` after the step started;
- `escalation_deadline`: `<timeline>.deadline` or `<timeline>.hard_deadline`.

The decision carries the planned schedule; the ticket keeps the actual one (`escalation`),
with each step's definition copied in (name, target, within, done_when, on_overdue), so a
timeline runs to its end as it started even when the rules change meanwhile.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from intake.calendars import ALWAYS, Calendar, as_spec, compile_calendar
from intake.config import ConfigDocument
from intake.durations import format_duration, parse_duration
from intake.logging import get_logger
from intake.message import RouteDecision

from .sla_policy import Inputs, SlaRules, evaluate, start

# The automatic transitions of the life cycle (lifecycle.py): pending → resolved, resolved →
# closed, planned when the ticket enters the status and cancelled when it leaves it.
AUTOMATIC_KINDS = ("auto_resolve", "auto_close")
KINDS = ("overflow", "sla_warning", "sla_breach", "escalation_step", "escalation_deadline",
         *AUTOMATIC_KINDS, "reminder",  # reminder: an agent's follow-up (reminders.py)
         "sla_message",  # a customer message for the SLA clocks (sla.py)
         "satisfaction_expiry")  # a rating link's end (satisfaction.py)
STATES = ("pending", "fired", "done", "cancelled", "overdue")
SLA_TARGETS = ("first_response", "next_response", "resolution")

log = get_logger(component="timers")


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    """How long a ticket waits in `pending` before it is resolved, and in `resolved` before it
    is closed: `tickets.pending_auto_resolve_after` and `tickets.resolved_auto_close_after`.

    Read from the config document's `tickets` section when present (another part of issue 17
    validates that section; this reads only these two keys and tolerates its absence: a value
    it cannot read is logged and the default kept).
    """

    pending_auto_resolve_after: timedelta = timedelta(days=7)
    resolved_auto_close_after: timedelta = timedelta(days=3)

    @classmethod
    def from_section(cls, section: Any) -> LifecycleSettings:
        if not isinstance(section, Mapping):
            return cls()
        values: dict[str, timedelta] = {}
        for key in ("pending_auto_resolve_after", "resolved_auto_close_after"):
            if section.get(key) is None:
                continue
            try:
                values[key] = parse_duration(section[key])
            except ValueError as exc:
                log.warning("tickets_setting_unreadable", key=key, error=str(exc)[:200])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class StepDefinition:
    id: str
    name: str | None
    target: dict[str, Any] | None  # {desk, skill_group}
    within: timedelta
    done_when: str
    on_overdue: list[Any]


@dataclass(frozen=True, slots=True)
class TimelineDefinition:
    id: str
    name: str | None
    business_hours: bool
    calendar: str | None
    steps: tuple[StepDefinition, ...]
    # For an escalation raised by hand (escalations.py): the router plans a decision's own.
    deadline: timedelta | None = None
    hard_deadline: timedelta | None = None


@dataclass(slots=True)
class Timelines:
    """The rules' escalation timelines, desks and calendars, as the ticket core reads them.

    Built from the routing sections of the config (`from_document`); empty when there are
    none, and then a timeline is run from the decision's planned schedule alone (each step's
    `within` the gap between planned due times, `done_when: manual`, `on_overdue: [notify]`).
    """

    timelines: dict[str, TimelineDefinition] = field(default_factory=dict)
    default_group: dict[str, str | None] = field(default_factory=dict)
    desk_calendar: dict[str, str | None] = field(default_factory=dict)
    calendars: dict[str, Calendar] = field(default_factory=lambda: {"always": ALWAYS})
    desks: frozenset[str] | None = None  # None: unknown (no rules), every desk is accepted
    groups: dict[str, str] | None = None  # skill group → its desk; None: every group accepted
    # Skill groups' `strategy` and per-channel `capacity` (assigning.py); a group not listed
    # is the router model's default, round_robin without a capacity.
    strategies: dict[str, str] = field(default_factory=dict)
    capacities: dict[str, dict[str, int]] = field(default_factory=dict)
    # The `tickets` section's automatic-transition delays (lifecycle.py), reloaded with these.
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)
    # The SLA policies and the desks and categories naming them (sla_policy.py).
    sla: SlaRules = field(default_factory=SlaRules)
    # `tickets.satisfaction` (satisfaction.SatisfactionPolicy); None: no requests are sent.
    satisfaction: Any = None

    def gone(self, desk: str, group: str | None) -> str | None:
        """Why a move to `desk`/`group` cannot happen under the rules in force, or None."""
        if self.desks is not None and desk not in self.desks:
            return f"desk {desk} is not in the rules in force"
        if group is not None and self.groups is not None:
            if group not in self.groups:
                return f"skill group {group} is not in the rules in force"
            if self.groups[group] != desk:
                return f"skill group {group} is not on desk {desk} in the rules in force"
        return None

    @classmethod
    def from_document(cls, doc: ConfigDocument) -> Timelines:
        """The sections as the router validated them (a file the router refuses never runs);
        a section this cannot read is logged and left out, never a crash at start."""
        from router.models import Escalation  # the rules' own model: one definition

        from .satisfaction import SatisfactionPolicy  # it builds on this module

        found = cls(lifecycle=LifecycleSettings.from_section(doc.section("tickets")),
                    sla=SlaRules.from_document(doc),
                    satisfaction=SatisfactionPolicy.from_document(doc))
        for spec in doc.section("calendars") or []:
            try:
                found.calendars[spec["id"]], _ = compile_calendar(as_spec(spec))
            except Exception as exc:
                log.warning("calendar_unreadable", error=str(exc)[:300])
        desks = doc.section("desks") or []
        if desks:  # without a desks section every desk is accepted
            found.desks = frozenset(d["id"] for d in desks
                                    if isinstance(d, dict) and "id" in d)
        groups = doc.section("skill_groups") or []
        if desks and groups:  # without a skill_groups section every group is accepted
            found.groups = {g["id"]: g.get("desk") for g in groups
                            if isinstance(g, dict) and "id" in g}
        for g in groups:
            if isinstance(g, dict) and "id" in g:
                found.strategies[g["id"]] = str(g.get("strategy") or "round_robin")
                found.capacities[g["id"]] = dict(g.get("capacity") or {})
        for d in desks:
            if isinstance(d, dict) and "id" in d:
                found.default_group[d["id"]] = d.get("default_skill_group")
                found.desk_calendar[d["id"]] = d.get("calendar")
        for raw in doc.section("escalations") or []:
            try:
                timeline = Escalation.model_validate(raw)
            except Exception as exc:
                log.warning("escalation_unreadable", error=str(exc)[:300])
                continue
            found.timelines[timeline.id] = TimelineDefinition(
                id=timeline.id, name=timeline.name, business_hours=timeline.business_hours,
                calendar=timeline.calendar, steps=tuple(StepDefinition(
                    id=s.id, name=s.name,
                    target=s.target.model_dump() if s.target is not None else None,
                    within=s.within, done_when=s.done_when,
                    on_overdue=[a if isinstance(a, str) else a.model_dump()
                                for a in s.on_overdue]) for s in timeline.steps),
                deadline=timeline.deadline, hard_deadline=timeline.hard_deadline)
        return found

    def calendar_of(self, escalation: Mapping[str, Any], desk: str | None) -> Calendar | None:
        """The calendar a business-hours timeline counts in; None: wall-clock time."""
        if not escalation.get("business_hours"):
            return None
        cal_id = escalation.get("calendar") or self.desk_calendar.get(desk or "") or "always"
        return self.calendars.get(cal_id, ALWAYS)

    def after(self, escalation: Mapping[str, Any], desk: str | None, start: datetime,
              within: timedelta) -> datetime:
        calendar = self.calendar_of(escalation, desk)
        if calendar is None:
            return start + within
        try:
            return calendar.add_working(start, within)
        except ValueError:  # no working time for years: count the wall clock, never crash
            return start + within

    def target(self, target: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """A step target with its desk's default group filled in when it names none."""
        if target is None:
            return None
        group = target.get("skill_group") or self.default_group.get(target["desk"])
        return {"desk": target["desk"], "skill_group": group}


@dataclass(slots=True)
class Timing:
    """What a new ticket gets from its decision."""

    sla: dict[str, Any] | None = None
    escalation: dict[str, Any] | None = None
    timers: list[dict[str, Any]] = field(default_factory=list)
    # Where the first escalation step moves the ticket when it starts (with the ticket).
    target: dict[str, Any] | None = None


def timer_row(kind: str, ticket_id: str, ref: str, due_at: datetime, now: datetime,
              data: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pending timer, every column given (the SQLite fast path's quick insert)."""
    return {"kind": kind, "ticket_id": ticket_id, "ref": ref, "due_at": due_at,
            "state": "pending", "fired_at": None, "reason": None, "data": data,
            "created_at": now}


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def plan_timing(ticket_id: str, decision: RouteDecision | None, received_at: datetime,
                now: datetime, timelines: Timelines, *, desk: str | None = None,
                category: str | None = None, priority: str = "normal") -> Timing:
    """The ticket's `sla`, `escalation` and timer rows from its decision; the SLA from its
    clocks (sla_policy.py) when a policy of the rules applies."""
    timing = Timing()
    kept = start(None, received_at, "new")
    decided = decision.sla.policy if decision is not None and decision.sla else None
    planned = evaluate(kept, Inputs(decided=decided, category=category, desk=desk,
                                    priority=priority, status="new"), received_at, timelines)
    if planned is not None:
        timing.sla = kept
        timing.timers.extend(timer_row(p.kind, ticket_id, p.target, p.due_at, now,
                                       {"cycle": p.cycle}) for p in planned)
    if decision is None:
        return timing
    for delivery in decision.deliveries:
        if delivery.role == "overflow" and delivery.due is not None:
            # `taken_when` rides on the timer: what stops it is settled when the ticket is
            # created, as the route said then (old rows without it: acknowledged).
            timing.timers.append(timer_row("overflow", ticket_id, delivery.desk, delivery.due,
                                           now, {"skill_group": delivery.skill_group,
                                                 "taken_when": decision.taken_when}))
    sla = decision.sla
    if planned is None and sla is not None and sla.policy is not None:
        timing.sla = {
            "policy": sla.policy, "business_hours": sla.business_hours,
            "calendar": sla.calendar, "first_response_due_at": iso(sla.first_response_due),
            "next_response_due_at": None, "resolution_due_at": iso(sla.resolution_due),
            "paused": False,
            "warnings": [{"target": w.target, "at": iso(w.at), "fired_at": None}
                         for w in sla.warnings],
            "breaches": []}
        for warning in sla.warnings:
            timing.timers.append(timer_row("sla_warning", ticket_id, warning.target,
                                           warning.at, now))
        for target, due in (("first_response", sla.first_response_due),
                            ("resolution", sla.resolution_due)):
            if due is not None:
                timing.timers.append(timer_row("sla_breach", ticket_id, target, due, now))
    if decision.escalation is not None and decision.escalation.steps:
        _plan_escalation(timing, ticket_id, decision, received_at, now, timelines)
    return timing


def _plan_escalation(timing: Timing, ticket_id: str, decision: RouteDecision,
                     received_at: datetime, now: datetime, timelines: Timelines) -> None:
    plan = decision.escalation
    assert plan is not None
    definition = timelines.timelines.get(plan.timeline)
    defined = {s.id: s for s in definition.steps} if definition else {}
    steps: list[dict[str, Any]] = []
    previous_due: datetime | None = received_at
    for planned in plan.steps:
        step = defined.get(planned.id)
        if step is not None:
            within = step.within
        elif planned.due is not None and previous_due is not None:
            within = max(planned.due - previous_due, timedelta())
        else:
            within = timedelta()
        target = ({"desk": planned.target.desk, "skill_group": planned.target.skill_group}
                  if planned.target is not None else timelines.target(
                      step.target if step else None))
        steps.append({
            "id": planned.id, "name": step.name if step else None, "target": target,
            "within": format_duration(within),
            "done_when": step.done_when if step else "manual",
            "on_overdue": list(step.on_overdue) if step else ["notify"],
            "started_at": None, "due_at": None, "completed_at": None, "overdue": False,
            "by": None, "note": None})
        previous_due = planned.due
    first = steps[0]
    first["started_at"] = iso(received_at)
    first_due = plan.steps[0].due or received_at + parse_duration(first["within"])
    first["due_at"] = iso(first_due)
    timing.escalation = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{ticket_id}/{plan.timeline}")),
        "timeline": plan.timeline, "name": definition.name if definition else None,
        "business_hours": definition.business_hours if definition else False,
        "calendar": definition.calendar if definition else None,
        "step": first["id"], "step_due_at": first["due_at"],
        "deadline_at": iso(plan.deadline), "hard_deadline_at": iso(plan.hard_deadline),
        "completed_at": None, "breaches": [], "steps": steps}
    timing.target = first["target"]
    timing.timers.append(timer_row("escalation_step", ticket_id,
                                   f"{plan.timeline}.{first['id']}", first_due, now))
    for which, due in (("deadline", plan.deadline), ("hard_deadline", plan.hard_deadline)):
        if due is not None:
            timing.timers.append(timer_row("escalation_deadline", ticket_id,
                                           f"{plan.timeline}.{which}", due, now))
