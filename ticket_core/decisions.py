"""The replay source: `GET /api/v1/decisions?since=&until=&limit=&cursor=`.

Each inbound message the router decided, selected by when the ticket core stored it
(`persisted_at`: a message drained late from a connector's outbox is found by when it
arrived here), oldest first: `{message_id, ticket_id, ticket_number, message, customer,
decision, persisted_at}`. `message` is the common message rebuilt from its row (its sender as
received, migration 0004), `decision` its own decision record, `customer` the snapshot the
decision read. `intake route replay` runs candidate rules over these.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import String, and_, cast, or_, select

from .api import PREFIX, ApiError, _answers_errors, json_response, page_limit
from .queries import CursorInvalid, decode_cursor, encode_cursor
from .schemas import DecisionItem, DecisionPage
from .statements import ATTACHMENTS, MESSAGES, TICKETS
from .store import TicketStore

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
PARAMS = ("since", "until", "limit", "cursor")


def as_message(row: Any, attachments: list[dict[str, Any]]) -> dict[str, Any]:
    """The common message (schema v1) as the router received it, without `route`."""
    message: dict[str, Any] = {
        "schema_version": 1, "id": row.id, "idempotency_key": row.idempotency_key,
        "channel": row.channel, "account": row.account, "kind": row.kind,
        "sender": row.sender or {"name": row.sender_name, "identities": []},
        "thread": row.thread, "subject": row.subject, "text": row.text, "html": row.html,
        "attachments": attachments, "call": row.call, "form": row.form, "event": row.event,
        "flags": row.flags or [], "channel_data": row.channel_data,
        "occurred_at": row.occurred_at.isoformat() if row.occurred_at else None,
        "received_at": row.received_at.isoformat(), "raw": row.raw, "trace_id": row.trace_id}
    return {key: value for key, value in message.items() if value is not None}


async def list_decisions(store: TicketStore, since: datetime | None, until: datetime | None,
                         limit: int, cursor: str | None) -> DecisionPage:
    """Oldest first, keyset-paginated on (persisted_at, id); raises CursorInvalid."""
    query = (select(MESSAGES, TICKETS.c.number.label("ticket_number"))
             .select_from(MESSAGES.outerjoin(TICKETS, TICKETS.c.id == MESSAGES.c.ticket_id))
             # Both backends store a JSON null as the text 'null', not as SQL NULL.
             .where(MESSAGES.c.direction == "in", MESSAGES.c.route.is_not(None),
                    cast(MESSAGES.c.route, String) != "null"))
    if since is not None:
        query = query.where(MESSAGES.c.persisted_at >= since)
    if until is not None:
        query = query.where(MESSAGES.c.persisted_at < until)
    if cursor:
        at, message_id = decode_cursor(cursor)
        query = query.where(or_(MESSAGES.c.persisted_at > at, and_(
            MESSAGES.c.persisted_at == at, MESSAGES.c.id > message_id)))
    query = query.order_by(MESSAGES.c.persisted_at, MESSAGES.c.id).limit(limit + 1)
    async with store.engine.connect() as conn:
        rows = list((await conn.execute(query)).all())
        page = rows[:limit]
        found: dict[str, list[dict[str, Any]]] = {}
        if page:
            for a in await conn.execute(select(ATTACHMENTS).where(
                    ATTACHMENTS.c.message_id.in_([r.id for r in page]))
                    .order_by(ATTACHMENTS.c.id)):
                found.setdefault(a.message_id, []).append({
                    "filename": a.filename, "original_filename": a.original_filename,
                    "content_type": a.content_type, "size": a.size, "sha256": a.sha256,
                    "blob": a.blob, "content_id": a.content_id, "inline": a.inline})
    items = [DecisionItem(message_id=r.id, ticket_id=r.ticket_id, ticket_number=r.ticket_number,
                          message=as_message(r, found.get(r.id, [])),
                          customer=(r.route or {}).get("customer"), decision=r.route,
                          persisted_at=r.persisted_at) for r in page]
    following = (encode_cursor(page[-1].persisted_at, page[-1].id)
                 if len(rows) > limit else None)
    return DecisionPage(items=items, next=following)


def _instant(name: str, value: str | None, problems: dict[str, str]) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        problems[name] = "an RFC 3339 time with an offset, e.g. 2026-11-20T00:00:00Z"
        return None
    return parsed


def decision_routes(store: TicketStore) -> list[web.RouteDef]:
    @_answers_errors
    async def decisions(request: web.Request) -> web.StreamResponse:
        query = request.query
        problems = {name: "unknown parameter; known: " + ", ".join(PARAMS)
                    for name in query if name not in PARAMS}
        for name in PARAMS:
            if len(query.getall(name, [])) > 1:
                problems[name] = "given more than once"
        since = _instant("since", query.get("since"), problems)
        until = _instant("until", query.get("until"), problems)
        limit = page_limit(query.get("limit") or None, DEFAULT_LIMIT, MAX_LIMIT, problems)
        if problems:
            raise ApiError(400, "invalid_parameter", "Some query parameters are not valid.",
                           problems)
        try:
            page = await list_decisions(store, since, until, limit, query.get("cursor") or None)
        except CursorInvalid as exc:
            raise ApiError(400, "invalid_parameter", "The cursor is not valid.",
                           {"cursor": "use the `next` value of a previous page"}) from exc
        return json_response(page)

    return [web.get(f"{PREFIX}/decisions", decisions)]


def decisions_path(ok: Any, bad_parameter: Any, unauthorized: Any,
                   unavailable: Any) -> dict[str, Any]:
    def param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "description": description,
                "schema": schema}

    return {"/api/v1/decisions": {"get": {
        "operationId": "listDecisions",
        "summary": "The router's decisions of stored messages, oldest first (replay source)",
        "description": "Selected by when the ticket core stored each message.",
        "parameters": [
            param("since", "Stored at or after (RFC 3339).", {"type": "string"}),
            param("until", "Stored before (RFC 3339).", {"type": "string"}),
            param("limit", "Page size.", {"type": "integer", "minimum": 1,
                                          "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}),
            param("cursor", "The `next` value of the previous page (opaque).",
                  {"type": "string"})],
        "responses": {"200": ok("DecisionPage", "A page of decisions"),
                      "400": bad_parameter, "401": unauthorized, "503": unavailable},
    }}}
