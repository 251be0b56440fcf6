"""One ticket's timed state in a write transaction: acknowledging, moving, the escalation's
steps, and what a due timer does to it.

`TicketWork.lock` reads the ticket `FOR UPDATE` (PostgreSQL; SQLite writes one at a time) so
the scheduler, the acknowledge and advance endpoints never overwrite each other's changes to
its `sla` and `escalation`; every writer locks the ticket before its timers, so they cannot
deadlock. `save()` writes the ticket and the timers it planned; the events go to the shared
list the caller appends to the event log last (store.append_events).
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection

from intake.durations import parse_duration

from . import sla
from .events import PlannedEvent
from .planner import TicketRef
from .schemas import DONE_STATUSES
from .statements import MESSAGES, TICKETS, TIMERS, CoreWriteStatements
from .timers import AUTOMATIC_KINDS, Timelines, iso, timer_row

_SAVE_TICKET = (
    update(TICKETS).where(TICKETS.c.id == bindparam("b_id")).values(
        desk=bindparam("b_desk"), skill_group=bindparam("b_skill_group"),
        priority=bindparam("b_priority"), acknowledged_at=bindparam("b_acknowledged_at"),
        sla=bindparam("b_sla", type_=TICKETS.c.sla.type),
        escalation=bindparam("b_escalation", type_=TICKETS.c.escalation.type),
        updated_at=bindparam("b_updated_at"), version=TICKETS.c.version + 1))


_SAVE_SLA = update(TICKETS).where(TICKETS.c.id == bindparam("b_id")).values(
    sla=bindparam("b_sla", type_=TICKETS.c.sla.type))


class StepNotManual(Exception):
    """The escalation's current step is completed by a signal (`done_when`), not by hand."""

    def __init__(self, step: str, done_when: str) -> None:
        super().__init__(step)
        self.step, self.done_when = step, done_when


class EscalationNotFound(LookupError):
    pass


class EscalationCompleted(Exception):
    pass


def taken_by(data: Any) -> str:
    """What takes a ticket off its overflow timer: `acknowledged` (the default, and rows
    planned before the decision carried `taken_when`) or `first_response`."""
    taken = (data or {}).get("taken_when") if isinstance(data, dict) else None
    return taken if taken in ("acknowledged", "first_response") else "acknowledged"


def ticket_condition(ticket_ref: str) -> Any:
    """A ticket by id, or by number (ASCII digits)."""
    if ticket_ref.isascii() and ticket_ref.isdigit() and len(ticket_ref) <= 18:
        return TICKETS.c.number == int(ticket_ref)
    return TICKETS.c.id == ticket_ref


class TicketWork:
    def __init__(self, connection: Connection, row: Any, timelines: Timelines,
                 events: list[PlannedEvent]) -> None:
        self.connection = connection
        self.row = row
        self.timelines = timelines
        self.events = events
        self.desk: str | None = row.desk
        self.skill_group: str | None = row.skill_group
        self.priority: str = row.priority
        self.status: str = row.status  # an automatic transition changes it (lifecycle.py)
        self.acknowledged_at: datetime | None = row.acknowledged_at
        self.sla: dict[str, Any] | None = copy.deepcopy(row.sla)
        self.escalation: dict[str, Any] | None = copy.deepcopy(row.escalation)
        self.new_timers: list[dict[str, Any]] = []
        self.changed = False
        self.now: datetime | None = None
        # Something the SLA clocks read changed (status, priority, desk): re-planned on save.
        self.sla_dirty = False
        # The clocks' reading changed `sla` only (sla.refresh): written without a new version.
        self.sla_changed = False
        # Who moved it to an escalation step's group: saving puts it in that group's queue
        # (escalations.requeue), to be assigned by the group's strategy.
        self.requeued_by: str | None = None

    @classmethod
    def lock(cls, connection: Connection, condition: Any, timelines: Timelines,
             events: list[PlannedEvent], *, skip_locked: bool = False) -> TicketWork | None:
        """The ticket, locked for this transaction; None when absent (or, with
        `skip_locked`, held by another transaction: try it next round)."""
        query = select(TICKETS).where(condition)
        if connection.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=skip_locked)
        row = connection.execute(query).first()
        return cls(connection, row, timelines, events) if row is not None else None

    @classmethod
    def lock_many(cls, connection: Connection, ticket_ids: list[str], timelines: Timelines,
                  events: list[PlannedEvent]) -> list[TicketWork]:
        """These tickets, locked in id order; on PostgreSQL those another transaction holds
        are skipped (SKIP LOCKED): the scheduler tries them next round."""
        query = select(TICKETS).where(TICKETS.c.id.in_(ticket_ids)).order_by(TICKETS.c.id)
        if connection.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        return [cls(connection, row, timelines, events) for row in connection.execute(query)]

    @staticmethod
    def save_many(connection: Connection, works: list[TicketWork], now: datetime) -> None:
        for work in works:
            if work.sla_dirty:
                work.sla_dirty = False
                sla.refresh(work, now)
        changed = [w for w in works if w.changed]
        if changed:
            connection.execute(_SAVE_TICKET, [
                {"b_id": w.row.id, "b_desk": w.desk, "b_skill_group": w.skill_group,
                 "b_priority": w.priority, "b_acknowledged_at": w.acknowledged_at,
                 "b_sla": w.sla, "b_escalation": w.escalation, "b_updated_at": now}
                for w in changed])
        clocks_only = [{"b_id": w.row.id, "b_sla": w.sla} for w in works
                       if w.sla_changed and not w.changed]
        if clocks_only:
            connection.execute(_SAVE_SLA, clocks_only)
        timers = [t for w in works for t in w.new_timers]
        if timers:
            connection.execute(TIMERS.insert(), timers)
        _requeue(connection, works, now)

    # ---- what changes --------------------------------------------------------------------

    def ref(self) -> TicketRef:
        r = self.row
        return TicketRef(id=r.id, number=r.number, status=r.status, customer_id=r.customer_id,
                         channel=r.channel, desk=self.desk)

    def event(self, event_type: str, at: datetime, actor: str, data: dict[str, Any]) -> None:
        self.events.append(PlannedEvent(event_type, at, self.ref(), self.row.customer_id,
                                        actor, data))

    def move(self, target: dict[str, Any] | None, at: datetime, actor: str,
             reason: str) -> None:
        """To another desk and group: `ticket.transferred` (key: the new desk)."""
        if target is None:
            return
        desk, group = target["desk"], target.get("skill_group")
        if (desk, group) == (self.desk, self.skill_group):
            return
        gone = self.timelines.gone(desk, group)
        if gone is not None:
            # The rules changed under a running timeline: stay, and say so, never crash.
            self.event("ticket.transferred", at, actor, {
                "reason": reason, "skipped": gone,
                "from": {"desk": self.desk, "skill_group": self.skill_group},
                "to": {"desk": desk, "skill_group": group}})
            return
        before = {"desk": self.desk, "skill_group": self.skill_group}
        self.desk, self.skill_group, self.changed = desk, group, True
        self.sla_dirty = True
        if reason == "escalation":
            self.requeued_by = actor
        self.event("ticket.transferred", at, actor, {
            "reason": reason, "from": before, "to": {"desk": desk, "skill_group": group}})

    def set_priority(self, priority: str, at: datetime, actor: str, reason: str) -> None:
        if priority == self.priority:
            return
        previous, self.priority, self.changed = self.priority, priority, True
        self.sla_dirty = True
        self.event("ticket.updated", at, actor, {
            "priority": priority, "reason": reason,
            "changes": {"priority": [previous, priority]}})

    def finish_timers(self, state: str, reason: str, *, kind: str,
                      ref: str | None = None) -> None:
        """Pending timers of this ticket whose condition was met (`done`) or that no longer
        apply (`cancelled`)."""
        condition = [TIMERS.c.ticket_id == self.row.id, TIMERS.c.state == "pending",
                     TIMERS.c.kind == kind]
        if ref is not None:
            condition.append(TIMERS.c.ref == ref)
        self.connection.execute(update(TIMERS).where(*condition).values(
            state=state, reason=reason))

    # ---- acknowledge and the escalation's steps ------------------------------------------

    def acknowledge(self, at: datetime, actor: str) -> bool:
        """Stops the overflow moves of a route `taken_when: acknowledged`; completes a current
        step whose `done_when` is `acknowledged`. Again: no change (False). The first-response
        clock runs on: the first reply meets it (`first_response`), as Zendesk's first reply
        time."""
        if self.acknowledged_at is not None:
            return False
        self.acknowledged_at, self.changed = at, True
        self.event("ticket.acknowledged", at, actor, {"acknowledged_at": at.isoformat()})
        self.finish_overflow("acknowledged")
        step = self.current_step()
        if step is not None and step["done_when"] == "acknowledged":
            self.complete_step(actor, None, at, actor)
        return True

    def first_response(self, at: datetime, actor: str, *, first: bool) -> None:
        """An agent's reply to the customer (`first`: the ticket's first one). The first meets
        the first-response target (its timers `done`, `sla.first_response_at`) and stops the
        overflow moves of a route `taken_when: first_response`; any reply completes a current
        step whose `done_when` is `first_response` (a step started after the first reply waits
        for the next one: it asks for an answer while it runs)."""
        if first:
            self.finish_overflow("first_response")
            self.finish_timers("done", "first_response", kind="sla_warning",
                               ref="first_response")
            self.finish_timers("done", "first_response", kind="sla_breach",
                               ref="first_response")
            if self.sla is not None and not self.sla.get("first_response_at"):
                self.sla["first_response_at"], self.changed = iso(at), True
        step = self.current_step()
        if step is not None and step["done_when"] == "first_response":
            self.complete_step(actor, None, at, actor)

    def finish_overflow(self, signal: str) -> None:
        """Pending overflow timers this signal takes the ticket by (their `taken_when`)."""
        rows = self.connection.execute(select(TIMERS.c.id, TIMERS.c.data).where(
            TIMERS.c.ticket_id == self.row.id, TIMERS.c.state == "pending",
            TIMERS.c.kind == "overflow")).all()
        ids = [r.id for r in rows if taken_by(r.data) == signal]
        if ids:
            self.connection.execute(update(TIMERS).where(
                TIMERS.c.id.in_(ids), TIMERS.c.state == "pending").values(
                state="done", reason=signal))

    def responded(self) -> bool:
        """Whether an agent replied on this ticket (the first-response signal)."""
        return self.connection.execute(select(MESSAGES.c.id).where(
            MESSAGES.c.ticket_id == self.row.id, MESSAGES.c.direction == "out",
            MESSAGES.c.kind == "reply").limit(1)).first() is not None

    def current_step(self) -> dict[str, Any] | None:
        escalation = self.escalation
        if escalation is None or escalation.get("completed_at") or not escalation.get("step"):
            return None
        return next((s for s in escalation["steps"] if s["id"] == escalation["step"]), None)

    def advance(self, escalation_id: str, by: str, note: str, at: datetime) -> None:
        """`POST …/escalations/{id}/advance`: completes the current `manual` step."""
        escalation = self.escalation
        if escalation is None or escalation_id not in (escalation["id"],
                                                       escalation["timeline"]):
            raise EscalationNotFound(escalation_id)
        step = self.current_step()
        if step is None:
            raise EscalationCompleted(escalation_id)
        if step["done_when"] != "manual":
            raise StepNotManual(step["id"], step["done_when"])
        self.complete_step(by, note, at, "agent")

    def complete_step(self, by: str, note: str | None, at: datetime, actor: str) -> None:
        escalation = self.escalation
        step = self.current_step()
        assert escalation is not None and step is not None
        step.update(completed_at=iso(at), by=by, note=note)
        self.changed = True
        timeline = escalation["timeline"]
        self.finish_timers("done", "completed", kind="escalation_step",
                           ref=f"{timeline}.{step['id']}")
        self.event("escalation.step_completed", at, actor, {
            "escalation_id": escalation["id"], "timeline": timeline, "step": step["id"],
            "by": by, "note": note, "overdue": step["overdue"]})
        index = next(i for i, s in enumerate(escalation["steps"]) if s is step)
        if index + 1 < len(escalation["steps"]):
            self.start_step(index + 1, at, actor)
            return
        escalation.update(completed_at=iso(at), step=None, step_due_at=None)
        self.finish_timers("done", "completed", kind="escalation_deadline")
        self.event("escalation.completed", at, actor, {
            "escalation_id": escalation["id"], "timeline": timeline, "skipped": []})

    def start_step(self, index: int, start: datetime, actor: str) -> None:
        escalation = self.escalation
        assert escalation is not None
        step = escalation["steps"][index]
        target = self.timelines.target(step.get("target"))
        due = self.timelines.after(escalation, (target or {}).get("desk") or self.desk,
                                   start, parse_duration(step["within"]))
        step.update(started_at=iso(start), due_at=iso(due))
        escalation.update(step=step["id"], step_due_at=iso(due))
        self.changed = True
        self.move(target, start, actor, "escalation")
        self.event("escalation.step_started", start, actor, {
            "escalation_id": escalation["id"], "timeline": escalation["timeline"],
            "step": step["id"], "name": step.get("name"), "target": target,
            "due_at": iso(due)})
        self.new_timers.append(timer_row(
            "escalation_step", self.row.id, f"{escalation['timeline']}.{step['id']}", due,
            self.now or start))

    def settle(self, status: str, now: datetime, actor: str) -> None:
        """The ticket's status changed: the SLA clocks are re-planned on save; resolved,
        closed or merged: its resolution clock stops, and a current step whose `done_when`
        is `resolved` is completed (the next one starts)."""
        self.sla_dirty = True
        if status not in DONE_STATUSES:
            return
        for kind in ("sla_warning", "sla_breach"):
            self.finish_timers("done", status, kind=kind, ref="resolution")
        step = self.current_step()
        if step is not None and step["done_when"] == "resolved":
            self.complete_step(actor, None, now, actor)
        else:  # resolved before its step: the escalation ends, the steps left skipped
            from .escalations import skip_remaining  # it builds on this module

            skip_remaining(self, status, now, actor)

    # ---- a due timer ---------------------------------------------------------------------

    def fire(self, timer: Any, now: datetime) -> tuple[str, str | None]:
        """What the timer does: its final state and why (None: it fired as planned). The
        history names the timer as the actor of what it changed (`system:<kind>`)."""
        planned = len(self.events)
        try:
            return self._fire(timer, now)
        finally:
            for event in self.events[planned:]:
                if event.by is None and event.actor == "system":
                    event.by = f"system:{timer.kind}"

    def _fire(self, timer: Any, now: datetime) -> tuple[str, str | None]:
        self.now = now
        status = self.status
        kind, ref = timer.kind, timer.ref
        if kind == "reminder":  # an agent's, whatever the ticket's status (reminders.py)
            from .reminders import reminder_due

            return reminder_due(self, timer, now)
        if kind == "satisfaction_expiry":  # on resolved and closed tickets too
            from .satisfaction import expiry_due

            return expiry_due(self, timer, now)
        if kind in AUTOMATIC_KINDS:
            from .lifecycle import automatic_due  # it builds on this module's TicketWork

            return automatic_due(self, timer, now)
        if kind in ("sla_warning", "sla_breach"):
            if ref == "first_response" and self.responded():
                return "done", "first_response"
            if status in DONE_STATUSES:
                return "done", f"ticket {status}"
            return sla.fire(self, timer, now)
        if kind == sla.MESSAGE_KIND:
            return sla.message_due(self, timer, now)
        if status in DONE_STATUSES:
            return "cancelled", f"ticket {status}"
        if kind == "overflow":
            signal = taken_by(timer.data)
            if signal == "acknowledged" and self.acknowledged_at is not None:
                return "done", "acknowledged"
            if signal == "first_response" and self.responded():
                return "done", "first_response"
            group = (timer.data or {}).get("skill_group")
            gone = self.timelines.gone(ref, group)
            if gone is not None:
                return "cancelled", gone
            self.move({"desk": ref, "skill_group": group}, now, "system", "overflow")
            return "fired", None
        if kind == "escalation_step":
            return self._step_due(ref, timer.due_at, now)
        if kind == "escalation_deadline":
            return self._deadline_passed(ref, timer.due_at, now)
        return "cancelled", f"unknown timer kind {kind}"

    def _step_due(self, ref: str, due_at: datetime, now: datetime) -> tuple[str, str | None]:
        step = self.current_step()
        escalation = self.escalation
        if escalation is None or step is None or ref != f"{escalation['timeline']}.{step['id']}":
            return "done", "step completed"
        step["overdue"], self.changed = True, True
        self.event("escalation.step_overdue", now, "system", {
            "escalation_id": escalation["id"], "timeline": escalation["timeline"],
            "step": step["id"], "name": step.get("name"), "due_at": iso(due_at)})
        from .escalations import notify_overdue  # it builds on this module

        notify_overdue(self, step, now)
        for action in step.get("on_overdue") or ["notify"]:
            if action == "advance":
                # The next step starts from this one's due time, not from when we noticed.
                self.complete_step("system", "overdue", due_at, "system")
            elif isinstance(action, dict) and "priority" in action:
                self.set_priority(action["priority"], now, "system", "escalation")
            elif isinstance(action, dict) and "assign" in action:
                self.move(self.timelines.target(action["assign"]), now, "system",
                          "escalation")
            # notify: the step_overdue event is the notification.
        return "overdue", None

    def _deadline_passed(self, ref: str, due_at: datetime,
                         now: datetime) -> tuple[str, str | None]:
        escalation = self.escalation
        if escalation is None or escalation.get("completed_at"):
            return "done", "completed"
        which = ref.rsplit(".", 1)[-1]
        escalation.setdefault("breaches", []).append({"deadline": which, "at": iso(due_at)})
        self.changed = True
        self.event("escalation.breached", now, "system", {
            "escalation_id": escalation["id"], "timeline": escalation["timeline"],
            "deadline": which, "at": iso(due_at), "step": escalation.get("step")})
        return "fired", None

    # ---- writing -------------------------------------------------------------------------

    def save(self, now: datetime) -> None:
        if self.sla_dirty:
            self.sla_dirty = False
            sla.refresh(self, now)
        if self.changed:
            self.connection.execute(update(TICKETS).where(TICKETS.c.id == self.row.id).values(
                desk=self.desk, skill_group=self.skill_group, priority=self.priority,
                acknowledged_at=self.acknowledged_at, sla=self.sla,
                escalation=self.escalation, updated_at=now, version=TICKETS.c.version + 1))
        elif self.sla_changed:
            self.connection.execute(update(TICKETS).where(TICKETS.c.id == self.row.id).values(
                sla=self.sla))
        if self.new_timers:
            self.connection.execute(TIMERS.insert(), self.new_timers)
        _requeue(self.connection, [self], now)


def _requeue(connection: Connection, works: list[TicketWork], now: datetime) -> None:
    moved = [w for w in works if w.requeued_by is not None]
    if moved:
        from .escalations import requeue  # assignment builds on this module

        requeue(connection, moved, now)


def _locked(connection: Connection, ticket_ref: str, timelines: Timelines,
            events: list[PlannedEvent]) -> TicketWork:
    from .replies import TicketNotFound  # replies imports the store, which imports us

    work = TicketWork.lock(connection, ticket_condition(ticket_ref), timelines, events)
    if work is None:
        raise TicketNotFound(ticket_ref)
    return work


def acknowledge_ticket(connection: Connection, ticket_ref: str, now: datetime,
                       timelines: Timelines, actor: str = "agent") -> tuple[str, bool]:
    """`POST /api/v1/tickets/{id}/acknowledge` in the caller's transaction:
    (ticket id, whether it changed)."""
    from .store import append_events

    events: list[PlannedEvent] = []
    work = _locked(connection, ticket_ref, timelines, events)
    work.now = now
    changed = work.acknowledge(now, actor)
    work.save(now)
    append_events(CoreWriteStatements(connection), events)
    return work.row.id, changed


def reply_sent(connection: Connection, ticket_id: str, now: datetime, timelines: Timelines,
               actor: str = "agent") -> None:
    """After `write_reply` stored an agent's reply, in its transaction: the first-response
    signal (`TicketWork.first_response`)."""
    from .store import append_events

    events: list[PlannedEvent] = []
    work = TicketWork.lock(connection, TICKETS.c.id == ticket_id, timelines, events)
    if work is None:
        return
    work.now = now
    replies = connection.execute(select(func.count()).select_from(MESSAGES).where(
        MESSAGES.c.ticket_id == ticket_id, MESSAGES.c.direction == "out",
        MESSAGES.c.kind == "reply")).scalar_one()
    work.first_response(now, actor, first=replies == 1)
    sla.replied(work, now)
    work.save(now)
    append_events(CoreWriteStatements(connection), events)


def advance_escalation(connection: Connection, ticket_ref: str, escalation_id: str, note: str,
                       now: datetime, timelines: Timelines) -> str:
    """`POST /api/v1/tickets/{id}/escalations/{escalation_id}/advance`: the ticket id."""
    from .store import append_events

    events: list[PlannedEvent] = []
    work = _locked(connection, ticket_ref, timelines, events)
    work.now = now
    work.advance(escalation_id, "agent", note, now)
    work.save(now)
    append_events(CoreWriteStatements(connection), events)
    return str(work.row.id)


def status_changed(connection: Connection, ticket_id: str, status: str, now: datetime,
                   timelines: Timelines, actor: str = "agent") -> None:
    """A ticket's status changed: the SLA clocks re-planned (a pause, a resume); resolved (or
    closed, merged): its resolution clock stops, and a current escalation step whose
    `done_when` is `resolved` is completed (the next one starts)."""
    from .store import append_events

    events: list[PlannedEvent] = []
    work = TicketWork.lock(connection, TICKETS.c.id == ticket_id, timelines, events)
    if work is None:
        return
    work.now = now
    work.settle(status, now, actor)
    work.save(now)
    append_events(CoreWriteStatements(connection), events)
