"""SLA clocks on a locked ticket (issue 17): re-planning its warning and breach timers from its
facts, and what a due SLA timer does.

Every change that moves a clock (a status, an agent reply, a customer message, a priority,
category, desk or policy change) ends in `refresh` on the ticket's `TicketWork`
(timeline.py): the facts are updated, the clocks read (sla_policy.py) and the pending
`sla_warning`/`sla_breach` timers made equal to what the clocks want: a timer whose target,
cycle or due time changed is cancelled (reason `re-planned`) and a new one written, so a pause
leaves none pending and a resume or re-target plans them at the business-correct minute.

A due SLA timer checks the facts again before it acts (the timers are a schedule, the facts
the truth): a warning or breach fires once per target and cycle, writes `sla.warning` or
`sla.breached`, records it in the ticket's `sla`, and notifies the assignee, the first-contact
agent and the desk's supervisors. The scheduler counts breaches
(`intake_sla_breaches_total{desk, target}`).

A customer message comes through the persist path (planner.py, both write paths), which only
adds an `sla_message` timer due at the message's `received_at`; the scheduler, or the next
`refresh` of the ticket, whichever comes first, applies it (the status timeline, a
next-response cycle). So the persist path reads no SLA and writes no ticket JSON.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from .agents_db import AGENTS
from .sla_policy import (
    Inputs,
    Planned,
    agent_replied,
    customer_wrote,
    decided_policy,
    evaluate,
    iso,
    start,
    status_entered,
    when,
)
from .statements import MESSAGES, TICKETS, TIMERS
from .timers import timer_row

if TYPE_CHECKING:
    from .timeline import TicketWork
    from .timers import Timelines

SLA_KINDS = ("sla_warning", "sla_breach")
MESSAGE_KIND = "sla_message"  # a customer message the SLA has not seen yet


def inputs(work: TicketWork) -> Inputs:
    return Inputs(decided=decided_policy(work.row.route), category=work.row.category,
                  desk=work.desk, priority=work.priority, status=work.status)


def message_timer(ticket_id: str, message_id: str, received_at: datetime, now: datetime,
                  reopened_from: str | None) -> dict[str, Any]:
    """The persist path's note of a customer message on an existing ticket."""
    return timer_row(MESSAGE_KIND, ticket_id, message_id, received_at, now,
                     {"reopened_from": reopened_from})


def _cycle(timer: Any) -> int:
    data = timer.data if isinstance(timer.data, dict) else {}
    return int(data.get("cycle") or 0)


def _apply_messages(work: TicketWork, sla: dict[str, Any], now: datetime) -> None:
    """Apply the customer messages the persist path noted, oldest first (marked done)."""
    rows = work.connection.execute(select(TIMERS).where(
        TIMERS.c.ticket_id == work.row.id, TIMERS.c.kind == MESSAGE_KIND,
        TIMERS.c.state == "pending", TIMERS.c.due_at <= now)
        .order_by(TIMERS.c.due_at, TIMERS.c.id)).all()
    for row in rows:
        _message(sla, row)
    if rows:
        work.connection.execute(update(TIMERS).where(
            TIMERS.c.id.in_([r.id for r in rows]), TIMERS.c.state == "pending").values(
            state="done", fired_at=now, reason="applied"))


def _message(sla: dict[str, Any], timer: Any) -> None:
    at = timer.due_at
    if (timer.data or {}).get("reopened_from"):
        status_entered(sla, "open", at)  # the persist path reopened it (planner.py)
    customer_wrote(sla, at)


def _base(work: TicketWork) -> dict[str, Any]:
    """The ticket's `sla` with its facts; a ticket planned without them (no policy of the
    rules, or planned before they were kept) starts them from its first message and its
    first agent reply."""
    if work.sla is not None and "facts" in work.sla:
        return start(work.sla, work.row.created_at, work.status)
    first_in, first_reply = work.connection.execute(select(
        select(func.min(MESSAGES.c.received_at)).where(
            MESSAGES.c.ticket_id == work.row.id, MESSAGES.c.direction == "in")
        .scalar_subquery(),
        select(func.min(MESSAGES.c.received_at)).where(
            MESSAGES.c.ticket_id == work.row.id, MESSAGES.c.direction == "out",
            MESSAGES.c.kind == "reply").scalar_subquery())).one()
    started = when((work.sla or {}).get("started_at")) or _aware(first_in) \
        or work.row.created_at
    # Its status before now is not known: counted as open (running) until now.
    sla = start(work.sla, started, "open")
    if first_reply is not None and not sla.get("first_response_at"):
        agent_replied(sla, _aware(first_reply) or started)
    return sla


def _aware(value: Any) -> datetime | None:
    """min() of a SQLite column comes back as its stored text, not through UtcDateTime."""
    if value is None:
        return None
    found = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


def refresh(work: TicketWork, now: datetime, sla: dict[str, Any] | None = None, *,
            sync: bool = True) -> None:
    """Bring the ticket's `sla` and (`sync`) its SLA timers up to its facts; the caller
    saves the ticket."""
    sla = sla if sla is not None else _base(work)
    _apply_messages(work, sla, now)
    status_entered(sla, work.status, now)
    planned = evaluate(sla, inputs(work), now, work.timelines)
    if planned is None:
        return  # no policy of the rules: what the decision planned stays
    work.sla, work.sla_changed = sla, True
    if sync:
        _sync_timers(work, planned, now)


def _sync_timers(work: TicketWork, planned: list[Planned], now: datetime) -> None:
    pending = work.connection.execute(select(TIMERS).where(
        TIMERS.c.ticket_id == work.row.id, TIMERS.c.kind.in_(SLA_KINDS),
        TIMERS.c.state == "pending")).all()
    wanted = {(p.kind, p.target, p.cycle, p.due_at) for p in planned}
    have = set()
    stale = []
    for row in pending:
        key = (row.kind, row.ref, _cycle(row), row.due_at)
        if key in wanted and key not in have:
            have.add(key)
        else:
            stale.append(row.id)
    if stale:
        work.connection.execute(update(TIMERS).where(
            TIMERS.c.id.in_(stale), TIMERS.c.state == "pending").values(
            state="cancelled", reason="re-planned"))
    rows = [timer_row(p.kind, work.row.id, p.target, p.due_at, now, {"cycle": p.cycle})
            for p in planned if (p.kind, p.target, p.cycle, p.due_at) not in have]
    if rows:
        work.connection.execute(TIMERS.insert(), rows)


def retarget(connection: Connection, ticket_id: str, now: datetime,
             timelines: Timelines | None) -> None:
    """In the caller's transaction, after its change of category, priority or desk: the
    clocks re-targeted (only the ticket's `sla` and timers written; the caller's change
    raised its version already)."""
    from .timeline import TicketWork  # it builds on this module

    if timelines is None:
        return
    work = TicketWork.lock(connection, TICKETS.c.id == ticket_id, timelines, [])
    if work is None:
        return
    work.now = now
    refresh(work, now)
    work.save(now)  # the clocks' reading only: no second version


def replied(work: TicketWork, at: datetime) -> None:
    """A public agent reply was stored: first response and the running cycle met."""
    sla = _base(work)
    _apply_messages(work, sla, at)  # a message before this reply is answered by it
    agent_replied(sla, at)
    refresh(work, at, sla)


def message_due(work: TicketWork, timer: Any, now: datetime) -> tuple[str, str | None]:
    """An `sla_message` timer: the customer message counted, the clocks re-planned."""
    sla = _base(work)
    _message(sla, timer)
    refresh(work, now, sla)
    return "done", "applied"


def fire(work: TicketWork, timer: Any, now: datetime) -> tuple[str, str | None]:
    """A due `sla_warning` or `sla_breach`: checked against the facts, then fired once."""
    target, cycle = str(timer.ref), _cycle(timer)
    kept = work.sla is not None and "facts" in work.sla
    if kept:
        refresh(work, now, sync=False)  # the facts may have moved since it was planned
        sla = work.sla
        assert sla is not None
        due = _wanted_due(sla, timer.kind, target, cycle)
        if due is None or due > now:
            refresh(work, now)  # planned again where the facts put it, if anywhere
            return "cancelled", "re-planned"
    else:  # planned by the decision before the ticket's clocks were kept: as planned
        sla = work.sla if work.sla is not None else {"warnings": [], "breaches": []}
        due = timer.due_at
    if _recorded(sla, timer.kind, target, cycle):
        return "done", "fired already"
    _record(work, sla, timer.kind, target, cycle, due, now)
    if kept:
        refresh(work, now)  # recorded: nothing more is wanted for this target and cycle
    return "fired", None


def _wanted_due(sla: dict[str, Any], kind: str, target: str, cycle: int) -> datetime | None:
    """The due time the clocks give this warning or breach now; None when none applies
    (met, paused, fired, another cycle)."""
    if kind == "sla_breach":
        if target == "next_response" and cycle != int(sla.get("next_response_cycle") or 0):
            return None
        if _recorded(sla, kind, target, cycle):
            return None
        met = {"first_response": sla.get("first_response_at")}.get(target)
        return None if met else when(sla.get(f"{target}_due_at"))
    for warning in sla.get("warnings", []):
        if (warning["target"], int(warning.get("cycle") or 0)) == (target, cycle) \
                and warning.get("fired_at") is None:
            return when(warning["at"])
    return None


def _recorded(sla: dict[str, Any], kind: str, target: str, cycle: int) -> bool:
    if kind == "sla_breach":
        return any((b["target"], int(b.get("cycle") or 0)) == (target, cycle)
                   for b in sla.get("breaches", []))
    return any((w["target"], int(w.get("cycle") or 0)) == (target, cycle)
               and w.get("fired_at") for w in sla.get("warnings", []))


def _record(work: TicketWork, sla: dict[str, Any], kind: str, target: str, cycle: int,
            due: datetime, now: datetime) -> None:
    from .notifications import notify  # it reads through queries, which the planner needs

    work.sla, work.changed = sla, True
    policy = sla.get("policy")
    if kind == "sla_warning":
        warnings = sla.setdefault("warnings", [])
        entry = next((w for w in warnings if w["target"] == target
                      and int(w.get("cycle") or 0) == cycle and not w.get("fired_at")), None)
        if entry is None:
            entry = {"target": target, "cycle": cycle, "at": iso(due)}
            warnings.append(entry)
        entry["fired_at"] = iso(now)
        breach_due = sla.get(f"{target}_due_at")
        work.event("sla.warning", now, "system", {
            "target": target, "cycle": cycle, "at": iso(due), "due_at": breach_due,
            "policy": policy})
        kind_name, payload = "sla_warning", {"due_at": breach_due}
    else:
        sla.setdefault("breaches", []).append({"target": target, "cycle": cycle,
                                               "at": iso(due)})
        work.event("sla.breached", now, "system", {
            "target": target, "cycle": cycle, "due_at": iso(due), "policy": policy})
        kind_name, payload = "sla_breached", {"due_at": iso(due)}
    notify(work.connection, _told(work), work.row.id, kind_name, {
        "ticket_number": work.row.number, "target": target, "cycle": cycle,
        "policy": policy, **payload}, now)


def _told(work: TicketWork) -> list[str | None]:
    """The assignee, the first-contact agent and the supervisors of the ticket's desk."""
    supervisors = [row.id for row in work.connection.execute(
        select(AGENTS.c.id, AGENTS.c.desks).where(AGENTS.c.role == "supervisor")
        .order_by(AGENTS.c.id)) if work.desk in (row.desks or [])]
    return [work.row.assignee_id, work.row.first_contact_agent_id, *supervisors]
