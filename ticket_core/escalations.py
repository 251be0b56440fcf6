"""The complaint escalation timeline (预警投诉, issue 17) in storage: raising one by hand,
advancing a step as a member of its group, who hears of an overdue step, the ticket's place in
a step's queue, and the steps a resolution skips.

The timeline itself (steps, timers, moves) is timeline.py's `TicketWork`; this module adds what
the agent workflow asks of it, each in the caller's write transaction:

- `raise_escalation`: `POST /api/v1/tickets/{id}/escalations` (supervisors): category
  `complaint` only, a timeline of the rules, one active escalation per ticket. Its first step
  starts at once, with the timeline's `deadline`/`hard_deadline` timers from now.
- `advance_step`: `…/escalations/{eid}/advance` for the agents of the current step's group
  (its target's `skill_group`, else the ticket's group); supervisors and admins may too.
- `requeue`: a step that moves the ticket (its `target`) leaves it unassigned at the back of
  the target group's queue, so that group's strategy assigns it (claim groups: it waits to be
  claimed); written by `assigning.record_assignment`, the one place an assignment is written.
- `notify_overdue`: an overdue step notifies its target group's supervisors (agents of role
  supervisor in that group; none there: the supervisors of the target's desk) and the members
  of the next step's target group (`escalation_overdue`, `payload.as`: `supervisor` or
  `next_step`).
- `skip_remaining`: a ticket resolved (closed, merged) before its last step completes its
  escalation: the steps not done are marked `skipped`, the step and deadline timers `done`,
  and `escalation.completed` names them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from intake.durations import format_duration

from .agents_db import AGENTS
from .events import PlannedEvent
from .notes import write_note
from .notifications import notify
from .replies import TicketNotFound
from .schemas import DONE_STATUSES
from .scope import Principal
from .statements import TICKETS, CoreWriteStatements
from .timeline import TicketWork, ticket_condition
from .timers import Timelines, iso, timer_row

COMPLAINT = "complaint"  # the category an escalation may be raised on


class EscalationRefused(Exception):
    """Why an escalation cannot be raised or advanced; `status` and `code` are the API's."""

    status, code = 409, "escalation_refused"


class NotAComplaint(EscalationRefused):
    status, code = 422, "not_a_complaint"


class UnknownTimeline(EscalationRefused):
    status, code = 422, "unknown_timeline"


class EscalationActive(EscalationRefused):
    code = "escalation_active"

    def __init__(self, escalation_id: str, step: str | None) -> None:
        super().__init__(escalation_id)
        self.escalation_id, self.step = escalation_id, step


class TicketSettled(EscalationRefused):
    def __init__(self, ticket_status: str) -> None:
        super().__init__(ticket_status)
        self.code = f"ticket_{ticket_status}"


class NotOfStepGroup(EscalationRefused):
    """An agent outside the current step's group advancing it."""

    status, code = 403, "not_a_member"

    def __init__(self, step: str, group: str | None) -> None:
        super().__init__(step)
        self.step, self.group = step, group


def _locked(connection: Connection, ticket_ref: str, timelines: Timelines,
            events: list[PlannedEvent]) -> TicketWork:
    work = TicketWork.lock(connection, ticket_condition(ticket_ref), timelines, events)
    if work is None:
        raise TicketNotFound(ticket_ref)
    return work


def _finish(connection: Connection, work: TicketWork, now: datetime) -> str:
    from .store import append_events  # the store imports the planner, which imports us

    work.save(now)
    append_events(CoreWriteStatements(connection), work.events)
    return str(work.row.id)


def new_escalation(ticket_id: str, timeline_id: str, timelines: Timelines,
                   ) -> dict[str, Any]:
    """The ticket's `escalation` of a timeline of the rules, no step started yet."""
    definition = timelines.timelines[timeline_id]
    steps = [{"id": s.id, "name": s.name, "target": timelines.target(s.target),
              "within": format_duration(s.within), "done_when": s.done_when,
              "on_overdue": list(s.on_overdue), "started_at": None, "due_at": None,
              "completed_at": None, "overdue": False, "by": None, "note": None,
              "skipped": False} for s in definition.steps]
    # A fresh id each time: a ticket may be escalated again once an escalation is over.
    return {"id": str(uuid.uuid4()), "timeline": timeline_id, "name": definition.name,
            "business_hours": definition.business_hours, "calendar": definition.calendar,
            "step": None, "step_due_at": None, "deadline_at": None, "hard_deadline_at": None,
            "completed_at": None, "breaches": [], "steps": steps}


def raise_escalation(connection: Connection, ticket_ref: str, timeline_id: str, note: str,
                     now: datetime, timelines: Timelines, actor: str) -> str:
    """`POST /api/v1/tickets/{id}/escalations`: the ticket id. The note is kept as an internal
    note named by `escalation.raised`; the first step starts now (and moves the ticket)."""
    work = _locked(connection, ticket_ref, timelines, [])
    work.now = now
    row = work.row
    if row.status in DONE_STATUSES:
        raise TicketSettled(row.status)
    if row.category != COMPLAINT:
        raise NotAComplaint(row.category or "none")
    definition = timelines.timelines.get(timeline_id)
    if definition is None:
        raise UnknownTimeline(timeline_id)
    active = work.escalation
    if active is not None and not active.get("completed_at"):
        raise EscalationActive(active["id"], active.get("step"))
    escalation = new_escalation(row.id, timeline_id, timelines)
    first_desk = (escalation["steps"][0]["target"] or {}).get("desk") or work.desk
    for which in ("deadline", "hard_deadline"):
        length = getattr(definition, which)
        if length is None:
            continue
        due = timelines.after(escalation, first_desk, now, length)
        escalation[f"{which}_at"] = iso(due)
        work.new_timers.append(timer_row("escalation_deadline", row.id,
                                         f"{timeline_id}.{which}", due, now))
    work.escalation, work.changed = escalation, True
    note_id = write_note(connection, row.id, note, [], actor, now)
    work.event("escalation.raised", now, actor, {
        "escalation_id": escalation["id"], "timeline": timeline_id, "note_id": note_id,
        "deadline_at": escalation["deadline_at"],
        "hard_deadline_at": escalation["hard_deadline_at"]})
    work.start_step(0, now, actor)
    return _finish(connection, work, now)


def step_group(work: TicketWork, step: dict[str, Any]) -> str | None:
    """The skill group a step is worked by: its target's, else where the ticket is."""
    return ((step.get("target") or {}).get("skill_group")
            or (work.timelines.target(step.get("target")) or {}).get("skill_group")
            or work.skill_group)


def advance_step(connection: Connection, ticket_ref: str, escalation_id: str, note: str,
                 now: datetime, timelines: Timelines, principal: Principal) -> str:
    """`…/escalations/{eid}/advance`: the current `manual` step completed with the note, the
    next one started; an agent must be in the step's group (checked on the locked ticket, so
    a step that moved on meanwhile is judged as it is now)."""
    work = _locked(connection, ticket_ref, timelines, [])
    work.now = now
    step = work.current_step()
    if step is not None and not principal.has_role("supervisor"):
        group = step_group(work, step)
        agent = connection.execute(select(AGENTS.c.skill_groups).where(
            AGENTS.c.id == principal.agent_id)).first()
        if agent is None or group not in (agent.skill_groups or []):
            raise NotOfStepGroup(step["id"], group)
    work.advance(escalation_id, principal.actor, note, now)  # raises the timeline's errors
    return _finish(connection, work, now)


def requeue(connection: Connection, works: list[TicketWork], now: datetime) -> None:
    """Tickets an escalation step moved (saved already): unassigned, at the back of their new
    group's queue; the assigner's next round (or the endpoint's own) applies its strategy."""
    from .assigning import record_assignment  # assigning imports timeline, which imports us

    for work in works:
        actor, work.requeued_by = work.requeued_by or "system", None
        row: Any = connection.execute(select(TICKETS).where(TICKETS.c.id == work.row.id)).one()
        if row.assignee_id is None:
            connection.execute(update(TICKETS).where(TICKETS.c.id == row.id).values(
                waiting_since=now))
            continue
        written = record_assignment(
            connection, row, None, now, actor, work.timelines, reason="escalation",
            history={"strategy": None, "agent_id": None, "candidates": [], "passed_over": {},
                     "by": "escalation", "step": (work.escalation or {}).get("step")})
        work.events.extend(written or [])


def _agents(connection: Connection) -> list[Any]:
    return list(connection.execute(select(AGENTS.c.id, AGENTS.c.role, AGENTS.c.desks,
                                          AGENTS.c.skill_groups)))


def group_supervisors(agents: list[Any], target: dict[str, Any] | None) -> list[str]:
    """Supervisors of the group (role supervisor, in the group); none there: of its desk."""
    if target is None:
        return []
    supervisors = [a for a in agents if a.role == "supervisor"]
    group, desk = target.get("skill_group"), target.get("desk")
    own = [a.id for a in supervisors if group is not None and group in (a.skill_groups or [])]
    return own or [a.id for a in supervisors if desk in (a.desks or [])]


def notify_overdue(work: TicketWork, step: dict[str, Any], now: datetime) -> None:
    """The step is overdue: its target group's supervisors, and the members of the next
    step's target group (who are about to get it), each get `escalation_overdue`."""
    escalation = work.escalation
    assert escalation is not None
    steps = escalation["steps"]
    index = next(i for i, s in enumerate(steps) if s is step)
    target = work.timelines.target(step.get("target")) or {
        "desk": work.desk, "skill_group": work.skill_group}
    following = steps[index + 1] if index + 1 < len(steps) else None
    next_target = work.timelines.target(following.get("target")) if following else None
    agents = _agents(work.connection)
    payload = {"ticket_number": work.row.number, "escalation_id": escalation["id"],
               "timeline": escalation["timeline"], "step": step["id"],
               "name": step.get("name"), "due_at": step.get("due_at"),
               "next_step": following["id"] if following else None}
    supervisors = group_supervisors(agents, target)
    notify(work.connection, supervisors, work.row.id, "escalation_overdue",
           {**payload, "as": "supervisor"}, now)
    if next_target is not None and next_target.get("skill_group"):
        group = next_target["skill_group"]
        members = [a.id for a in agents if group in (a.skill_groups or [])
                   and a.id not in supervisors]
        notify(work.connection, members, work.row.id, "escalation_overdue",
               {**payload, "as": "next_step"}, now)


def skip_remaining(work: TicketWork, status: str, now: datetime, actor: str) -> None:
    """The ticket is resolved (closed, merged) while its escalation runs: the escalation is
    complete, its steps not done `skipped`, its step and deadline timers `done`."""
    escalation = work.escalation
    if status not in DONE_STATUSES or escalation is None or escalation.get("completed_at"):
        return
    skipped = [s["id"] for s in escalation["steps"] if not s.get("completed_at")]
    for step in escalation["steps"]:
        if not step.get("completed_at"):
            step["skipped"] = True
    escalation.update(completed_at=iso(now), step=None, step_due_at=None)
    work.changed = True
    for kind in ("escalation_step", "escalation_deadline"):
        work.finish_timers("done", f"ticket {status}", kind=kind)
    work.event("escalation.completed", now, actor, {
        "escalation_id": escalation["id"], "timeline": escalation["timeline"],
        "skipped": skipped, "reason": f"ticket {status}"})
