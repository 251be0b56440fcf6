"""Phone calls in the ticket core: progress updates its call, the record lands on a ticket.

A progress message (`kind: call`, `call.state` a live state) updates the `calls` row and the
event log and nothing else: no customer, ticket or message. Each inbound call gets exactly one
`call.ringing` (the screen pop), written with the first message of the call this process
handles (progress in any state, or the record, so a lost `ringing` still pops), then
`call.answered` and `call.ended` at most once each, each in the transaction that changes the
call. The record is persisted as any message, on the ticket an agent picked (set here as
`thread.ticket_id`; a picked ticket closed or merged since falls back to a new ticket); a
`call_recording` follow-up joins its call's ticket. Preparing a record and noting where it
landed are two transactions around the batch that stores it: a crash in between redelivers
the record, which is then a duplicate whose landing is noted again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import phonenumbers
from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Connection

from intake.message import Message, Thread

from . import db
from .events import PlannedEvent
from .planner import PersistResult
from .statements import CoreWriteStatements
from .store import TicketStore, append_events

CALLS = db.Call.__table__
TICKETS = db.Ticket.__table__
IDENTITIES = db.CustomerIdentity.__table__
CUSTOMERS = db.Customer.__table__

LIVE_STATES = ("ringing", "answered", "ended")
CALL_EVENT_TYPES = ("call.ringing", "call.answered", "call.ended")
CLOSED_STATUSES = ("resolved", "closed", "merged")
OPEN_TICKETS_IN_POP = 10


@dataclass(slots=True)
class CallEvent(PlannedEvent):
    """A `call.*` event: no ticket yet, the router's desk."""

    desk: str | None = None

    def row(self, event_id: int) -> dict[str, Any]:
        row = PlannedEvent.row(self, event_id)  # a slots dataclass: no bare super()
        row["desk"] = self.desk
        return row


def is_progress(message: Message) -> bool:
    return (message.kind == "call" and message.call is not None
            and message.call.state in LIVE_STATES)


def is_call_message(message: Message) -> bool:
    """A call's record or recording follow-up: persisted, with its call noted."""
    return message.kind == "call" and message.call is not None and not is_progress(message)


def _key(message: Message) -> tuple[str, str]:
    assert message.call is not None
    return (message.call.line or message.account, message.call.call_id)


def _desk(message: Message) -> str | None:
    return message.route.deliveries[0].desk if message.route else None


def _load(connection: Connection, line: str, call_id: str) -> Any:
    return connection.execute(select(CALLS).where(
        CALLS.c.line == line, CALLS.c.call_id == call_id)).first()


def _call_json(message: Message) -> dict[str, Any]:
    assert message.call is not None
    return message.call.model_dump(mode="json", by_alias=True)


def _upsert(connection: Connection, message: Message, now: datetime) -> Any:
    """The call's row, created from this message if new; a live state only moves forward."""
    line, call_id = _key(message)
    row = _load(connection, line, call_id)
    call = _call_json(message)
    state = call["state"]
    if row is None:
        connection.execute(insert(CALLS).values(
            line=line, call_id=call_id, state=state, direction=call["direction"],
            caller=call.get("from"), desk=_desk(message), customer_id=None, call=call,
            pop=None, pick=None, history=[], created_at=now, updated_at=now))
    elif row.recorded_at is None and _rank(state) >= _rank(row.state):
        connection.execute(update(CALLS).where(
            CALLS.c.line == line, CALLS.c.call_id == call_id).values(
            state=state, call=call, desk=row.desk or _desk(message), updated_at=now))
    return _load(connection, line, call_id)


def _rank(state: str) -> int:
    return LIVE_STATES.index(state) if state in LIVE_STATES else len(LIVE_STATES)


def _note_events(connection: Connection, message: Message, row: Any, now: datetime) -> None:
    """Write the call events this message makes due, once each."""
    assert message.call is not None
    call = message.call
    if call.direction != "inbound":
        return
    line, call_id = row.line, row.call_id
    events: list[PlannedEvent] = []
    values: dict[str, Any] = {}
    desk = row.desk or _desk(message)
    customer_id = row.customer_id
    if row.ringing_event_at is None:
        pop = screen_pop(connection, message)
        customer_id = pop["customer"]["id"] if pop["customer"] else None
        values.update(ringing_event_at=now, pop=pop, customer_id=customer_id)
        events.append(CallEvent("call.ringing", now, None, customer_id, "telephony", pop,
                                desk=desk))
    if call.answered_at is not None and row.answered_event_at is None:
        values["answered_event_at"] = now
        events.append(CallEvent("call.answered", now, None, customer_id, "telephony", {
            "call_id": call_id, "line": line, "agent": call.agent,
            "answered_at": call.answered_at.isoformat()}, desk=desk))
    ended = call.state not in ("ringing", "answered")
    if ended and row.ended_event_at is None:
        values["ended_event_at"] = now
        events.append(CallEvent("call.ended", now, None, customer_id, "telephony", {
            "call_id": call_id, "line": line, "state": call.state,
            "ended_at": call.ended_at.isoformat() if call.ended_at else None}, desk=desk))
    if values:
        connection.execute(update(CALLS).where(
            CALLS.c.line == line, CALLS.c.call_id == call_id).values(**values))
    append_events(CoreWriteStatements(connection), events)


def screen_pop(connection: Connection, message: Message) -> dict[str, Any]:
    """`call.ringing`'s data: the caller, the customer holding that number, their open
    tickets (latest first, at most 10), read in the transaction that writes the event."""
    assert message.call is not None
    call = message.call
    caller = _number(call.from_, call.from_ext, call.from_raw, bool(call.withheld),
                     message.sender.name)
    called = _number(call.to, call.to_ext, call.to_raw, False, None)
    customer: dict[str, Any] | None = None
    open_tickets: list[dict[str, Any]] = []
    if call.withheld:
        lookup = "withheld"
    else:
        found = connection.execute(select(IDENTITIES.c.customer_id).where(
            IDENTITIES.c.kind == "phone", IDENTITIES.c.value == call.from_)).first() \
            if call.from_ else None
        lookup = "found" if found else "not_found"
        if found:
            customer = _customer(connection, found.customer_id)
            open_tickets = [
                {"id": t.id, "number": t.number, "subject": t.subject, "status": t.status,
                 "priority": t.priority, "updated_at": t.updated_at.isoformat()}
                for t in connection.execute(
                    select(TICKETS).where(TICKETS.c.customer_id == found.customer_id,
                                          TICKETS.c.status.not_in(CLOSED_STATUSES))
                    .order_by(TICKETS.c.updated_at.desc(), TICKETS.c.number.desc())
                    .limit(OPEN_TICKETS_IN_POP))]
    return {"call_id": call.call_id, "line": call.line or message.account,
            "direction": call.direction, "caller": caller,
            "called": {"number": called["number"], "display": called["display"]},
            "agents": list(call.agents), "queue": call.queue, "customer": customer,
            "open_tickets": open_tickets, "lookup": lookup,
            "received_at": message.received_at.isoformat()}


def _customer(connection: Connection, customer_id: str) -> dict[str, Any]:
    row = connection.execute(select(CUSTOMERS).where(CUSTOMERS.c.id == customer_id)).first()
    identities = connection.execute(
        select(IDENTITIES.c.kind, IDENTITIES.c.value, IDENTITIES.c.verified)
        .where(IDENTITIES.c.customer_id == customer_id).order_by(IDENTITIES.c.id)).all()
    return {"id": customer_id, "name": getattr(row, "name", None),
            "identities": [{"kind": k, "value": v, "verified": bool(verified)}
                           for k, v, verified in identities]}


def _number(e164: str | None, ext: str | None, raw: str | None, withheld: bool,
            name: str | None) -> dict[str, Any]:
    region = display = None
    if e164:
        try:
            parsed = phonenumbers.parse(e164, None)
            region = phonenumbers.region_code_for_number(parsed)
            display = phonenumbers.format_number(
                parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        except phonenumbers.NumberParseException:
            pass
    return {"number": e164, "display": display or raw, "ext": ext, "withheld": withheld,
            "valid": e164 is not None, "region": region, "name": name, "raw": raw}


# -- the consumer's steps ---------------------------------------------------------------------


def record_progress(connection: Connection, message: Message, now: datetime) -> None:
    line, call_id = _key(message)
    existing = _load(connection, line, call_id)
    if existing is not None and existing.recorded_at is not None:
        return  # progress after the record changes nothing
    row = _upsert(connection, message, now)
    _note_events(connection, message, row, now)


def prepare_record(connection: Connection, message: Message, now: datetime) -> Message:
    """Pop and end the call if not done yet, and point the record at its ticket."""
    assert message.call is not None
    line, call_id = _key(message)
    existing = _load(connection, line, call_id)
    if "call_recording" in message.flags:
        if existing is not None and existing.ticket_id:
            return _on_ticket(message, existing.ticket_id)
        return message
    row = _upsert(connection, message, now) if existing is None or \
        existing.recorded_at is None else existing
    if row.recorded_at is None:
        _note_events(connection, message, row, now)
    if row.recorded_at is not None and row.ticket_id:
        return _on_ticket(message, row.ticket_id)  # a redelivered record: the same ticket
    pick = row.pick or {}
    if pick.get("ticket_id"):
        ticket = connection.execute(select(TICKETS.c.id, TICKETS.c.status).where(
            TICKETS.c.id == pick["ticket_id"])).first()
        if ticket is not None and ticket.status not in ("closed", "merged"):
            return _on_ticket(message, ticket.id)
        return _new_ticket(message)  # the picked ticket was closed or merged since
    if pick.get("new_ticket"):
        return _new_ticket(message)
    return message


def _on_ticket(message: Message, ticket_id: str) -> Message:
    thread = message.thread.model_copy() if message.thread else Thread()
    thread.ticket_id = ticket_id
    return message.model_copy(update={"thread": thread})


def _new_ticket(message: Message) -> Message:
    if message.thread is None or not message.thread.join_latest_open:
        return message
    thread = message.thread.model_copy(update={"join_latest_open": None})
    return message.model_copy(update={"thread": thread})


def finish_record(connection: Connection, message: Message, result: PersistResult,
                  now: datetime) -> None:
    """Note where the record landed; the call is recorded from now on."""
    if "call_recording" in message.flags:
        return
    line, call_id = _key(message)
    connection.execute(update(CALLS).where(and_(
        CALLS.c.line == line, CALLS.c.call_id == call_id, CALLS.c.recorded_at.is_(None)))
        .values(state=message.call.state if message.call else "completed",
                call=_call_json(message), ticket_id=result.ticket_id,
                message_id=result.message_id, customer_id=result.customer_id,
                recorded_at=now, updated_at=now))


async def persist_calls(store: TicketStore, messages: list[Message],
                        now: datetime) -> list[Message]:
    """Apply progress (each its own transaction) and prepare records; returns the messages
    still to persist as ticket messages, in order."""
    rest: list[Message] = []
    for message in messages:
        if is_progress(message):
            await store.write(partial(record_progress, message=message, now=now))
        elif is_call_message(message):
            rest.append(await store.write(partial(prepare_record, message=message, now=now)))
        else:
            rest.append(message)
    return rest


async def finish_calls(store: TicketStore, messages: list[Message],
                       results: list[PersistResult], now: datetime) -> None:
    for message, result in zip(messages, results, strict=True):
        if is_call_message(message):
            await store.write(partial(finish_record, message=message, result=result, now=now))
