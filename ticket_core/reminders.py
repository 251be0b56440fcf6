"""Follow-up reminders (回访提醒, issue 17): an agent's "call this customer back on Friday".

A reminder is a row of the `timers` table of kind `reminder` (one durable mechanism: the
scheduler fires it once, late but never lost, also when the service was down at its minute),
owned by its agent (`ref` is the agent's id), not by the ticket's state: it fires on resolved
and closed tickets too, stays with its agent through a transfer, and is left out of the
ticket's `timers`. Firing notifies its agent (`reminder`, with the note) and writes a
`reminder.due` event (without the note: the event log may leave the building).

States over the API: `pending` (timer pending), `due` (fired, not yet done), `done`,
`cancelled`; `PATCH /api/v1/reminders/{id}` closes one. Lists hold only reminders of tickets
the caller can read (scope.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Connection

from .agents_db import AGENTS
from .api import PREFIX, ApiError, _answers_errors, json_response, page_limit
from .events import PlannedEvent
from .notifications import notify
from .queries import CursorInvalid, decode_cursor, encode_cursor
from .replies import TicketNotFound
from .scope import Principal, current, visible_tickets
from .statements import TICKETS, TIMERS, CoreWriteStatements
from .store import TicketStore, append_events
from .threads import TicketRef
from .timeline import TicketWork, ticket_condition
from .timing_api import _body, _ticket_ref
from .workflow_schemas import ReminderCreate, ReminderPage, ReminderPatch, ReminderView

KIND = "reminder"
# API state → the timer's state.
STATES = {"pending": "pending", "due": "fired", "done": "done", "cancelled": "cancelled"}
_API_STATE = {timer: api for api, timer in STATES.items()}


def view(row: Any) -> ReminderView:
    data = row.data or {}
    return ReminderView(id=str(row.id), ticket_id=row.ticket_id, agent_id=row.ref,
                        due_at=row.due_at, note=data.get("note"),
                        state=_API_STATE.get(row.state, "cancelled"),  # type: ignore[arg-type]
                        created_by=data.get("created_by"), created_at=row.created_at,
                        fired_at=row.fired_at)


def _ref(ticket: Any) -> TicketRef:
    return TicketRef(id=ticket.id, number=ticket.number, status=ticket.status,
                     customer_id=ticket.customer_id, channel=ticket.channel, desk=ticket.desk)


def write_reminder(connection: Connection, ticket_ref: str, agent_id: str, due_at: datetime,
                   note: str | None, actor: str, now: datetime) -> int:
    """The reminder's timer, in the caller's transaction: its id."""
    ticket: Any = connection.execute(select(TICKETS).where(
        ticket_condition(ticket_ref))).first()
    if ticket is None:
        raise TicketNotFound(ticket_ref)
    reminder_id: int = connection.execute(TIMERS.insert().returning(TIMERS.c.id), [{
        "kind": KIND, "ticket_id": ticket.id, "ref": agent_id, "due_at": due_at,
        "state": "pending", "fired_at": None, "reason": None,
        "data": {"note": note, "created_by": actor}, "created_at": now}]).scalar_one()
    append_events(CoreWriteStatements(connection), [PlannedEvent(
        "reminder.created", now, _ref(ticket), ticket.customer_id, actor,
        {"reminder_id": str(reminder_id), "agent_id": agent_id, "due_at": due_at.isoformat()},
        after={"reminder_id": str(reminder_id), "agent_id": agent_id,
               "due_at": due_at.isoformat(), "note": note})])
    return reminder_id


def reminder_due(work: TicketWork, timer: Any, now: datetime) -> tuple[str, str | None]:
    """The scheduler's effect of a due reminder on its locked ticket, whatever its status."""
    data = timer.data or {}
    notify(work.connection, [timer.ref], work.row.id, "reminder", {
        "reminder_id": str(timer.id), "ticket_number": work.row.number,
        "note": data.get("note"), "due_at": timer.due_at.isoformat()}, now)
    work.event("reminder.due", now, "system:reminder", {
        "reminder_id": str(timer.id), "agent_id": timer.ref,
        "due_at": timer.due_at.isoformat()})
    return "fired", None


def close_reminder(connection: Connection, reminder_id: int, state: str, actor: str,
                   now: datetime) -> Any:
    """`pending` or `due` → `done` or `cancelled`; the same state again changes nothing.
    Returns the row, or raises ApiError 409 when it was closed otherwise."""
    target = STATES[state]
    previous = connection.execute(select(TIMERS.c.state).where(
        TIMERS.c.id == reminder_id)).scalar()  # for the history's `before`
    changed = connection.execute(update(TIMERS).where(
        TIMERS.c.id == reminder_id, TIMERS.c.kind == KIND,
        TIMERS.c.state.in_(("pending", "fired"))).values(
            state=target, reason=f"{state} by {actor}"[:256])).rowcount
    row: Any = connection.execute(select(TIMERS).where(TIMERS.c.id == reminder_id)).one()
    if not changed and row.state != target:
        raise ApiError(409, "invalid_transition", f"Reminder {reminder_id} is already "
                       f"{_API_STATE.get(row.state, row.state)}.",
                       {"state": "allowed from pending or due only"})
    if changed:
        ticket: Any = connection.execute(select(TICKETS).where(
            TICKETS.c.id == row.ticket_id)).first()
        if ticket is not None:
            append_events(CoreWriteStatements(connection), [PlannedEvent(
                "reminder.updated", now, _ref(ticket), ticket.customer_id, actor,
                {"reminder_id": str(reminder_id), "agent_id": row.ref, "state": state},
                before={"reminder_id": str(reminder_id),
                        "state": _API_STATE.get(previous, previous)},
                after={"reminder_id": str(reminder_id), "state": state})])
    return row


def _reminders(principal: Principal) -> Any:
    """Reminders of tickets the principal can read."""
    query = select(TIMERS).where(TIMERS.c.kind == KIND)
    condition = visible_tickets(principal)
    if condition is not None:
        query = query.where(TIMERS.c.ticket_id.in_(
            select(TICKETS.c.id).where(condition).scalar_subquery()))
    return query


def due_reminder_tickets(principal: Principal) -> Any:
    """`GET /api/v1/tickets?reminder=due`: tickets with a fired, not yet done reminder of the
    caller's agent (the admin token: anyone's)."""
    query = select(TIMERS.c.ticket_id).where(TIMERS.c.kind == KIND, TIMERS.c.state == "fired")
    if principal.agent_id is not None:
        query = query.where(TIMERS.c.ref == principal.agent_id)
    return query


def _reminder_id(request: web.Request) -> int:
    raw = request.match_info["reminder_id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise ApiError(404, "reminder_not_found", f"No reminder {raw[:64]}.")
    return int(raw)


def reminder_routes(store: TicketStore) -> list[web.RouteDef]:
    @_answers_errors
    async def create(request: web.Request) -> web.StreamResponse:
        ticket_ref = _ticket_ref(request)
        body = await _body(request, ReminderCreate)
        principal = current()
        agent_id = (body.agent_id or "").strip() or principal.agent_id
        if agent_id is None:
            raise ApiError(422, "invalid_body", "The admin token is no agent: name whose "
                           "reminder it is.", {"agent_id": "required with the admin token"})
        if agent_id != principal.agent_id and not principal.has_role("supervisor"):
            raise ApiError(403, "forbidden", "Agents set reminders for themselves only.",
                           {"role": "requires supervisor"})
        if body.due_at.tzinfo is None:
            raise ApiError(422, "invalid_body", "due_at needs a UTC offset.",
                           {"due_at": "ISO 8601 with an offset, e.g. 2026-09-25T10:00:00+08:00"})
        now = store.clock.now()
        if body.due_at <= now:
            raise ApiError(422, "invalid_body", "A reminder is due in the future.",
                           {"due_at": f"must be after now ({now.isoformat()})"})
        note = body.note.strip() if body.note else None
        if note and "\x00" in note:
            raise ApiError(422, "invalid_body", "The note holds a NUL character.",
                           {"note": "must not contain NUL (U+0000)"})
        async with store.engine.connect() as conn:
            agent = (await conn.execute(select(AGENTS.c.id, AGENTS.c.desks).where(
                AGENTS.c.id == agent_id))).first()
        if agent is None or (principal.desks is not None and agent_id != principal.agent_id
                             and not set(agent.desks or []) & principal.desks):
            raise ApiError(422, "invalid_body", f"No agent {agent_id} in your desks.",
                           {"agent_id": "an agent sharing one of your desks"})
        actor = principal.actor
        try:
            reminder_id = await store.write(lambda c: write_reminder(
                c, ticket_ref, agent_id, body.due_at, note or None, actor, now))
        except TicketNotFound as exc:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_ref}.") from exc
        async with store.engine.connect() as conn:
            row = (await conn.execute(select(TIMERS).where(TIMERS.c.id == reminder_id))).one()
        response = json_response(view(row))
        response.set_status(201)
        response.headers["Location"] = f"{PREFIX}/agents/me/reminders"
        return response

    @_answers_errors
    async def mine(request: web.Request) -> web.StreamResponse:
        known = ("state", "limit", "cursor")
        problems = {name: "unknown parameter; known: " + ", ".join(known)
                    for name in request.query if name not in known}
        state = (request.query.get("state") or "").strip() or None
        if state is not None and state not in STATES:
            problems["state"] = "one of " + ", ".join(STATES)
        limit = page_limit(request.query.get("limit"), 50, 200, problems)
        principal = current()
        query = _reminders(principal).where(TIMERS.c.ref == (principal.agent_id or ""))
        if state in STATES:
            query = query.where(TIMERS.c.state == STATES[state])
        cursor = request.query.get("cursor")
        if cursor:
            try:
                at, last = decode_cursor(cursor)
                if not last.isdigit():
                    raise CursorInvalid(last)
                query = query.where(or_(TIMERS.c.due_at > at, and_(
                    TIMERS.c.due_at == at, TIMERS.c.id > int(last))))
            except CursorInvalid:
                problems["cursor"] = "use the `next` value of a previous page"
        if problems:
            raise ApiError(400, "invalid_parameter", "Some query parameters are not valid.",
                           problems)
        if principal.agent_id is None:
            raise ApiError(404, "agent_not_found", "The admin token is no agent.")
        async with store.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(TIMERS.c.due_at, TIMERS.c.id)
                                       .limit(limit + 1))).all()
        items = [view(r) for r in rows[:limit]]
        following = (encode_cursor(rows[limit - 1].due_at, str(rows[limit - 1].id))
                     if len(rows) > limit else None)
        return json_response(ReminderPage(items=items, next=following))

    @_answers_errors
    async def patch(request: web.Request) -> web.StreamResponse:
        reminder_id = _reminder_id(request)
        principal = current()
        async with store.engine.connect() as conn:
            row = (await conn.execute(_reminders(principal).where(
                TIMERS.c.id == reminder_id))).first()
        # Another agent's reminder is theirs: a supervisor of the desk may close it too.
        if row is None or (row.ref != principal.agent_id
                           and not principal.has_role("supervisor")):
            raise ApiError(404, "reminder_not_found", f"No reminder {reminder_id}.")
        body = await _body(request, ReminderPatch)
        now = store.clock.now()
        actor = principal.actor
        closed = await store.write(lambda c: close_reminder(
            c, reminder_id, body.state, actor, now))
        return json_response(view(closed))

    return [
        web.post(f"{PREFIX}/tickets/{{ticket_id}}/reminders", create),
        web.get(f"{PREFIX}/agents/me/reminders", mine),
        web.patch(f"{PREFIX}/reminders/{{reminder_id}}", patch),
    ]
