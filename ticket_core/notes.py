"""Internal notes (issue 17): `POST /api/v1/tickets/{id}/notes {"text", "mentions"}`.

A note is the agents' own: stored in `ticket_notes` (never in `messages`), shown under `notes`
on the ticket detail and nowhere a customer looks. It never gets an outbox row, so nothing of
it reaches `intake.outbound`; its `note.created` event carries the note's id and mentions, not
its text (the event log is relayed to `intake.events`, which webhooks may take outside).
Mentions are agent ids kept on the note; notifying them is the agent workflow's (issue 17).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from .api import PREFIX, ApiError, _answers_errors, json_response
from .events import PlannedEvent
from .queries import NOTES, note_view
from .replies import TicketNotFound
from .schemas import NoteRequest
from .scope import current
from .search_index import reindex_connection
from .statements import TICKETS, CoreWriteStatements
from .store import TicketStore, append_events
from .threads import TicketRef
from .timeline import ticket_condition
from .timing_api import _body, _ticket_ref


def write_note(connection: Connection, ticket_ref: str, text: str, mentions: list[str],
               author: str, now: datetime) -> str:
    """Store the note in the caller's transaction (the ticket's version goes up): its id."""
    query = select(TICKETS).where(ticket_condition(ticket_ref))
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    ticket: Any = connection.execute(query).first()
    if ticket is None:
        raise TicketNotFound(ticket_ref)
    note_id = str(uuid.uuid4())
    connection.execute(NOTES.insert(), [{
        "id": note_id, "ticket_id": ticket.id, "text": text, "mentions": mentions,
        "author": author, "created_at": now}])
    connection.execute(update(TICKETS).where(TICKETS.c.id == ticket.id).values(
        updated_at=now, version=TICKETS.c.version + 1))
    reindex_connection(connection, [ticket.id])  # agents find a ticket by its notes
    ref = TicketRef(id=ticket.id, number=ticket.number, status=ticket.status,
                    customer_id=ticket.customer_id, channel=ticket.channel, desk=ticket.desk)
    append_events(CoreWriteStatements(connection), [PlannedEvent(
        "note.created", now, ref, ticket.customer_id, "agent",
        {"note_id": note_id, "mentions": mentions, "author": author},
        # The history is agent-only: it keeps the note's text, which the event never carries.
        after={"note_id": note_id, "text": text, "mentions": mentions}, by=author)])
    return note_id


def note_routes(store: TicketStore) -> list[web.RouteDef]:
    @_answers_errors
    async def post_note(request: web.Request) -> web.StreamResponse:
        ticket_ref = _ticket_ref(request)
        body = await _body(request, NoteRequest)
        text = body.text.strip()
        if not text or "\x00" in body.text:
            raise ApiError(422, "invalid_body", "A note needs a text.",
                           {"text": "must not be empty nor hold NUL (U+0000)"})
        mentions = list(dict.fromkeys(m.strip() for m in body.mentions))
        if any(not m or "\x00" in m for m in mentions):
            raise ApiError(422, "invalid_body", "A mention is not an agent id.",
                           {"mentions": "agent ids, not empty"})
        now = store.clock.now()
        author = current().actor  # read here: the writer's thread does not see the context
        try:
            note_id = await store.write(lambda c: write_note(
                c, ticket_ref, body.text, mentions, author, now))
        except TicketNotFound as exc:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_ref}.") from exc
        async with store.engine.connect() as conn:
            row = (await conn.execute(select(NOTES).where(NOTES.c.id == note_id))).first()
        assert row is not None
        response = json_response(note_view(row))
        response.set_status(201)
        response.headers["Location"] = f"{PREFIX}/tickets/{row.ticket_id}"
        return response

    return [web.post(f"{PREFIX}/tickets/{{ticket_id}}/notes", post_note)]


def note_paths(ok: Any, error: Any, ref: str, unauthorized: Any,
               unavailable: Any) -> dict[str, Any]:
    """The OpenAPI path of the notes endpoint (openapi.py passes its helpers)."""
    return {"/api/v1/tickets/{ticket_id}/notes": {"post": {
        "operationId": "addTicketNote",
        "summary": "Add an internal note: shown under `notes` on the ticket, never sent to "
                   "the customer",
        "description": "Never in `messages`, never on `intake.outbound`, never on a page a "
                       "customer sees. `mentions` are agent ids, kept on the note. Raises the "
                       "ticket's `version` and writes `note.created` (without the text).",
        "parameters": [{"name": "ticket_id", "in": "path", "required": True,
                        "description": "The ticket's id, or its number (digits)",
                        "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": ref.format(model="NoteRequest")},
            "example": {"text": "客户要求周五前回电", "mentions": ["agent-7"]}}}},
        "responses": {"201": ok("NoteView", "The stored note"),
                      "401": unauthorized,
                      "404": error("No such ticket", ["ticket_not_found"]),
                      "422": error("The body is not valid (an empty text)",
                                   ["invalid_body"]),
                      "503": unavailable},
    }}}
