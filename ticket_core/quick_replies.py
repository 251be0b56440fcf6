"""Quick replies (快捷回复, issue 17): canned answers with {{placeholders}}, rendered for a ticket.

Two sources, one list: `tickets.quick_replies` in the config (read-only here, ids as
configured) and the `quick_replies` table, managed through `POST/PATCH/DELETE
/api/v1/quick-replies[/{id}]` by supervisors for their desks (admins: any desk, or every desk
with `desks: []`). A reply is visible to a caller when it is for every desk or for one of the
caller's; `GET /api/v1/quick-replies?desk=&q=` searches title, shortcut and text.

`POST /api/v1/tickets/{id}/quick-replies/{qid}/render` fills the placeholders from the ticket,
its customer, the caller's agent and the request's `inputs` with the kernel's one-pass renderer
(intake/placeholders.py): a customer named `{{agent.name}}` stays that, and a placeholder with
neither a value nor a default is `422 unresolved_placeholders` naming each, never a hole.
"""

from __future__ import annotations

import unicodedata
import uuid
from typing import Any

from aiohttp import web
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from intake.placeholders import Unresolved, render

from .agents_db import AGENTS
from .api import PREFIX, ApiError, _answers_errors, json_response, page_limit
from .quick_replies_db import QUICK_REPLIES
from .scope import Principal, current, require_role
from .store import TicketStore
from .tickets_config import placeholder_problems
from .timing_api import _body, _ticket_ref
from .workflow_schemas import (
    QuickReplyCreate,
    QuickReplyPage,
    QuickReplyPatch,
    QuickReplyView,
    RenderedView,
    RenderRequest,
)

LIST_PARAMS = frozenset({"desk", "q", "limit", "cursor"})


def _fold(text: str | None) -> str:
    return unicodedata.normalize("NFKC", text or "").casefold()


def _from_row(row: Any) -> QuickReplyView:
    return QuickReplyView(id=row.id, title=row.title, shortcut=row.shortcut,
                          desks=list(row.desks or []), text=row.text, source="api",
                          created_by=row.created_by, created_at=row.created_at,
                          updated_at=row.updated_at)


def _configured(store: TicketStore) -> list[QuickReplyView]:
    return [QuickReplyView(id=q.id, title=q.title, shortcut=q.shortcut, desks=list(q.desks),
                           text=q.text, source="config") for q in store.tickets.quick_replies]


def visible(reply: QuickReplyView, principal: Principal) -> bool:
    return (principal.desks is None or not reply.desks
            or any(d in principal.desks for d in reply.desks))


def manageable(desks: list[str], principal: Principal) -> bool:
    """Supervisors manage replies of their own desks only; `[]` (every desk) is the admin's."""
    if principal.desks is None:
        return True
    return bool(desks) and all(d in principal.desks for d in desks)


async def all_replies(store: TicketStore) -> list[QuickReplyView]:
    """The config's in their order, then the managed ones, oldest first."""
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(QUICK_REPLIES).order_by(
            QUICK_REPLIES.c.created_at, QUICK_REPLIES.c.id))).all()
    return [*_configured(store), *(_from_row(r) for r in rows)]


async def find_reply(store: TicketStore, reply_id: str) -> QuickReplyView | None:
    """A reply the caller may see, by id; None otherwise (answered 404 alike)."""
    for reply in _configured(store):
        if reply.id == reply_id:
            return reply if visible(reply, current()) else None
    if len(reply_id) > 36:
        return None
    async with store.engine.connect() as conn:
        row = (await conn.execute(select(QUICK_REPLIES).where(
            QUICK_REPLIES.c.id == reply_id))).first()
    found = _from_row(row) if row is not None else None
    return found if found is not None and visible(found, current()) else None


def _check_desks(store: TicketStore, desks: list[str], principal: Principal) -> list[str]:
    desks = list(dict.fromkeys(d.strip() for d in desks))
    known = store.timelines.desks
    unknown = [d for d in desks if not d or (known is not None and d not in known)]
    if unknown:
        raise ApiError(422, "invalid_body", "A desk is not in the rules in force.",
                       {"desks": "unknown: " + ", ".join(unknown)})
    if not manageable(desks, principal):
        raise ApiError(403, "forbidden", "Supervisors manage quick replies of their own desks "
                       "only; one for every desk (`desks: []`) is an admin's.",
                       {"desks": "only your desks, at least one"})
    return desks


def _check_text(store: TicketStore, text: str) -> None:
    if "\x00" in text:
        raise ApiError(422, "invalid_body", "The text holds a NUL character.",
                       {"text": "must not contain NUL (U+0000)"})
    found = placeholder_problems(text, store.tickets)
    if found:
        raise ApiError(422, "invalid_placeholders", "Some placeholders are not valid: "
                       + "; ".join(found), {"text": "; ".join(found)})


def _values(ticket: Any, customer: Any, agent_name: str | None,
            inputs: dict[str, str]) -> dict[str, object | None]:
    def shown(value: Any) -> object | None:
        if isinstance(value, list):
            return "、".join(str(v) for v in value) or None
        return value

    values: dict[str, object | None] = {
        "ticket.number": ticket.number, "ticket.subject": ticket.subject,
        "customer.name": customer.name if customer is not None else None,
        "agent.name": agent_name}
    for key, value in (ticket.fields or {}).items():
        values[f"ticket.fields.{key}"] = shown(value)
    for key, value in ((customer.fields if customer is not None else None) or {}).items():
        values[f"customer.fields.{key}"] = shown(value)
    for name, value in inputs.items():
        values[f"input.{name}"] = value
    return values


def quick_reply_routes(store: TicketStore) -> list[web.RouteDef]:
    @_answers_errors
    async def list_replies(request: web.Request) -> web.StreamResponse:
        problems = {name: "unknown parameter; known: " + ", ".join(sorted(LIST_PARAMS))
                    for name in request.query if name not in LIST_PARAMS}
        limit = page_limit(request.query.get("limit"), 50, 200, problems)
        offset = 0
        cursor = request.query.get("cursor")
        if cursor:
            if not (cursor.isascii() and cursor.isdigit() and len(cursor) < 9):
                problems["cursor"] = "use the `next` value of a previous page"
            else:
                offset = int(cursor)
        if problems:
            raise ApiError(400, "invalid_parameter", "Some query parameters are not valid.",
                           problems)
        desk = (request.query.get("desk") or "").strip() or None  # out of scope: 403 before
        needle = _fold(request.query.get("q")).strip()
        principal = current()
        items = [r for r in await all_replies(store) if visible(r, principal)
                 and (desk is None or not r.desks or desk in r.desks)
                 and (not needle or any(needle in _fold(v) for v in (r.title, r.shortcut,
                                                                      r.text)))]
        page = items[offset:offset + limit]
        following = str(offset + limit) if len(items) > offset + limit else None
        return json_response(QuickReplyPage(items=page, next=following))

    @_answers_errors
    async def create_reply(request: web.Request) -> web.StreamResponse:
        principal = require_role("supervisor", "managing quick replies")
        body = await _body(request, QuickReplyCreate)
        desks = _check_desks(store, body.desks, principal)
        _check_text(store, body.text)
        now = store.clock.now()
        if not body.title.strip():
            raise ApiError(422, "invalid_body", "A quick reply needs a title.",
                           {"title": "must not be blank"})
        row = {"id": str(uuid.uuid4()), "title": body.title.strip(),
               "shortcut": body.shortcut, "desks": desks, "text": body.text,
               "created_by": principal.actor[:128], "created_at": now, "updated_at": now}
        await store.write(lambda c: c.execute(QUICK_REPLIES.insert(), [row]))
        found = await find_reply(store, row["id"])
        assert found is not None
        response = json_response(found)
        response.set_status(201)
        response.headers["Location"] = f"{PREFIX}/quick-replies/{row['id']}"
        return response

    async def managed(reply_id: str) -> QuickReplyView:
        principal = require_role("supervisor", "managing quick replies")
        found = await find_reply(store, reply_id)
        if found is None:
            raise ApiError(404, "quick_reply_not_found", f"No quick reply {reply_id}.")
        if found.source == "config":
            raise ApiError(409, "read_only", f"Quick reply {reply_id} is in the config "
                           "(tickets.quick_replies): change it there.")
        if not manageable(found.desks, principal):
            raise ApiError(403, "forbidden", "This quick reply is also for desks that are not "
                           "yours.", {"desks": "only your desks"})
        return found

    @_answers_errors
    async def patch_reply(request: web.Request) -> web.StreamResponse:
        reply_id = request.match_info["quick_reply_id"]
        await managed(reply_id)
        body = await _body(request, QuickReplyPatch)
        values: dict[str, Any] = {}
        for key in ("title", "text", "desks"):
            if key in body.model_fields_set and getattr(body, key) is None:
                raise ApiError(422, "invalid_body", f"{key} cannot be removed.",
                               {key: "must not be null"})
        if body.desks is not None:
            values["desks"] = _check_desks(store, body.desks, current())
        if body.text is not None:
            _check_text(store, body.text)
            values["text"] = body.text
        if body.title is not None:
            if not body.title.strip():
                raise ApiError(422, "invalid_body", "A quick reply needs a title.",
                               {"title": "must not be blank"})
            values["title"] = body.title.strip()
        if "shortcut" in body.model_fields_set:
            values["shortcut"] = body.shortcut
        if values:
            values["updated_at"] = store.clock.now()
            await store.write(lambda c: c.execute(update(QUICK_REPLIES).where(
                QUICK_REPLIES.c.id == reply_id).values(**values)))
        found = await find_reply(store, reply_id)
        if found is None:  # moved to desks the caller no longer sees, or deleted meanwhile
            raise ApiError(404, "quick_reply_not_found", f"No quick reply {reply_id}.")
        return json_response(found)

    @_answers_errors
    async def delete_reply(request: web.Request) -> web.StreamResponse:
        reply_id = request.match_info["quick_reply_id"]
        await managed(reply_id)
        await store.write(lambda c: _delete(c, reply_id))
        return web.Response(status=204)

    @_answers_errors
    async def render_reply(request: web.Request) -> web.StreamResponse:
        ticket_ref = _ticket_ref(request)
        reply_id = request.match_info["quick_reply_id"]
        body = await _body(request, RenderRequest, empty_ok=True)
        ticket = await store.get_ticket(ticket_ref)
        if ticket is None:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_ref}.")
        reply = await find_reply(store, reply_id)
        if reply is None or (reply.desks and ticket.desk not in reply.desks):
            raise ApiError(404, "quick_reply_not_found",
                           f"No quick reply {reply_id} for this ticket's desk.")
        customer = await store.get_customer(ticket.customer_id)
        agent_name = await _agent_name(store, current().agent_id)
        try:
            text = render(reply.text, _values(ticket, customer, agent_name, body.inputs))
        except Unresolved as exc:
            raise ApiError(422, "unresolved_placeholders",
                           "Some placeholders have neither a value nor a default: "
                           + ", ".join(exc.names) + ".",
                           {name: "no value and no default" for name in exc.names}) from exc
        return json_response(RenderedView(text=text))

    return [
        web.get(f"{PREFIX}/quick-replies", list_replies),
        web.post(f"{PREFIX}/quick-replies", create_reply),
        web.patch(f"{PREFIX}/quick-replies/{{quick_reply_id}}", patch_reply),
        web.delete(f"{PREFIX}/quick-replies/{{quick_reply_id}}", delete_reply),
        web.post(f"{PREFIX}/tickets/{{ticket_id}}/quick-replies/{{quick_reply_id}}/render",
                 render_reply),
    ]


def _delete(connection: Connection, reply_id: str) -> None:
    connection.execute(delete(QUICK_REPLIES).where(QUICK_REPLIES.c.id == reply_id))


async def _agent_name(store: TicketStore, agent_id: str | None) -> str | None:
    """The caller's agent's name; the admin token is no agent (its `{{agent.name}}` has no
    value: the default, else 422)."""
    if agent_id is None:
        return None
    async with store.engine.connect() as conn:
        name: str | None = (await conn.execute(select(AGENTS.c.name).where(
            AGENTS.c.id == agent_id))).scalar()
    return name


