"""The agent API for calls: `GET /api/v1/calls/{call_id}` and the pick.

`POST /api/v1/calls/{call_id}/pick` `{"ticket_id": …}` or `{"new_ticket": true}` stores which
ticket the call's record goes to (the last pick wins; each is in the call's `history`),
applied when the record arrives. `?line=` names the line when two lines' calls share an id.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from intake.message import utcnow

from . import db
from .api import PREFIX, ApiError, _answers_errors, json_response
from .scope import visible_desk_column, visible_tickets, where_visible
from .store import TicketStore

CALLS = db.Call.__table__
TICKETS = db.Ticket.__table__


class CallRecorded(Exception):
    pass


def call_body(row: Any) -> dict[str, Any]:
    def at(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {"line": row.line, "call_id": row.call_id, "state": row.state,
            "direction": row.direction, "desk": row.desk, "customer_id": row.customer_id,
            "call": row.call, "pop": row.pop, "pick": row.pick, "history": row.history,
            "ticket_id": row.ticket_id, "message_id": row.message_id,
            "recorded_at": at(row.recorded_at), "created_at": at(row.created_at),
            "updated_at": at(row.updated_at)}


async def find_call(store: TicketStore, request: web.Request) -> Any:
    call_id = request.match_info["call_id"]
    line = request.query.get("line")
    unknown = {name: "unknown parameter; known: line" for name in request.query
               if name != "line"}
    if unknown:
        raise ApiError(400, "invalid_parameter", "Some query parameters are not valid.",
                       unknown)
    # Calls of desks out of the caller's scope do not exist for them (scope.py).
    query = where_visible(select(CALLS).where(CALLS.c.call_id == call_id),
                          visible_desk_column(CALLS.c.desk))
    if line:
        query = query.where(CALLS.c.line == line)
    async with store.engine.connect() as connection:
        rows = (await connection.execute(query.limit(2))).all()
    if not rows:
        raise ApiError(404, "unknown_call", f"No call {call_id} has been seen.")
    if len(rows) > 1:
        raise ApiError(409, "ambiguous_call",
                       f"Several lines have a call {call_id}: name one with ?line=.",
                       {"line": "required for this call"})
    return rows[0]


def _pick_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, "invalid_body", "The body is not JSON.", {"body": str(exc)}) from exc
    if isinstance(body, dict) and set(body) == {"ticket_id"} \
            and isinstance(body["ticket_id"], str) and 0 < len(body["ticket_id"]) <= 64:
        return {"ticket_id": body["ticket_id"]}
    if isinstance(body, dict) and body == {"new_ticket": True}:
        return {"new_ticket": True}
    raise ApiError(422, "invalid_body", 'Send {"ticket_id": …} or {"new_ticket": true}.',
                   {"body": "one of ticket_id, new_ticket"})


def store_pick(connection: Connection, line: str, call_id: str,
               pick: dict[str, Any]) -> None:
    row = connection.execute(select(CALLS).where(
        CALLS.c.line == line, CALLS.c.call_id == call_id)).first()
    if row is None or row.recorded_at is not None:
        raise CallRecorded
    if "ticket_id" in pick:
        found = connection.execute(select(TICKETS.c.id).where(
            TICKETS.c.id == pick["ticket_id"])).first()
        if found is None:
            raise LookupError(pick["ticket_id"])
    now = utcnow()
    picked = {**pick, "picked_at": now.isoformat()}
    connection.execute(update(CALLS).where(
        CALLS.c.line == line, CALLS.c.call_id == call_id).values(
        pick=picked, history=[*row.history, picked], updated_at=now))


async def scoped_call_body(store: TicketStore, row: Any) -> dict[str, Any]:
    """The call as the caller may see it: the pop's open tickets only those in their scope."""
    body = call_body(row)
    pop = body["pop"]
    visible = visible_tickets()
    if visible is not None and isinstance(pop, dict) and pop.get("open_tickets"):
        ids = [t.get("id") for t in pop["open_tickets"]]
        async with store.engine.connect() as connection:
            seen = set((await connection.execute(select(TICKETS.c.id).where(
                TICKETS.c.id.in_(ids), visible))).scalars())
        body["pop"] = {**pop, "open_tickets": [t for t in pop["open_tickets"]
                                               if t.get("id") in seen]}
    return body


def call_routes(store: TicketStore) -> list[web.RouteDef]:
    @_answers_errors
    async def get_call(request: web.Request) -> web.StreamResponse:
        return json_response(await scoped_call_body(store, await find_call(store, request)))

    @_answers_errors
    async def pick(request: web.Request) -> web.StreamResponse:
        row = await find_call(store, request)
        wanted = _pick_body(await request.read())
        if "ticket_id" in wanted and await store.ticket_access(wanted["ticket_id"]) is None:
            raise ApiError(422, "unknown_ticket", f"No ticket {wanted['ticket_id']}.",
                           {"ticket_id": "not a ticket id"})
        try:
            await store.write(lambda c: store_pick(c, row.line, row.call_id, wanted))
        except CallRecorded as exc:
            raise ApiError(409, "call_recorded",
                           "The call's record is on its ticket already.") from exc
        except LookupError as exc:
            raise ApiError(422, "unknown_ticket", f"No ticket {wanted.get('ticket_id')}.",
                           {"ticket_id": "not a ticket id"}) from exc
        async with store.engine.connect() as connection:
            fresh = (await connection.execute(select(CALLS).where(
                CALLS.c.line == row.line, CALLS.c.call_id == row.call_id))).first()
        return json_response(await scoped_call_body(store, fresh))

    return [web.get(f"{PREFIX}/calls/{{call_id}}", get_call),
            web.post(f"{PREFIX}/calls/{{call_id}}/pick", pick)]
