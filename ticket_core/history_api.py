"""`GET /api/v1/tickets/{id}/history` and `GET /api/v1/customers/{id}/history`: the audit
history (history.py) in `{items, next}` cursor pages, oldest first, desk-scoped; their views
and OpenAPI paths. There is no route that changes or deletes a row."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import Field
from sqlalchemy import select

from .api import PREFIX, ApiError, _answers_errors, json_response, page_limit
from .history import customer_page, ticket_page, view
from .schemas import View
from .scope import current
from .statements import CUSTOMERS
from .store import TicketStore

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_CURSOR_PREFIX = "h"


class HistoryEntryView(View):
    id: int = Field(description="ascending in commit order (the change's event id)")
    at: datetime = Field(description="when it changed (domain time: the test clock's in tests)")
    ticket_id: str | None = Field(description="null: a change of the customer")
    customer_id: str | None = None
    actor: str = Field(description="`agent:<id> token:<id>`, `admin`, `system:<rule or "
                                   "timer>`, `customer` or `connector:<channel>`")
    action: str = Field(description="the change's event type, e.g. `ticket.updated`")
    before: Any = Field(description="the values before the change; null when it created "
                                    "something")
    after: Any = Field(description="the values after it, with why (`reason`, an assignment's "
                                   "strategy and candidates, a transfer's note)")
    trace_id: str | None = Field(description="the message's trace, or the request's "
                                             "(`X-Trace-Id`)")


class HistoryPage(View):
    items: list[HistoryEntryView]
    next: str | None = Field(description="pass as `cursor` for the next page; null at the end")


HISTORY_MODELS = (HistoryEntryView, HistoryPage)


def encode_history_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{last_id}".encode()).decode().rstrip("=")


def decode_history_cursor(cursor: str) -> int | None:
    """The last id of the previous page, or None for a cursor that is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    digits = raw[len(_CURSOR_PREFIX):]
    if not raw.startswith(_CURSOR_PREFIX) or not digits.isascii() or not digits.isdigit() \
            or len(digits) > 18:
        return None
    return int(digits)


def _page_query(request: web.Request) -> tuple[int, int]:
    """(limit, id after which the page starts); unknown parameters are `400`."""
    known = ("limit", "cursor")
    problems = {name: "unknown parameter; known: " + ", ".join(known)
                for name in request.query if name not in known}
    limit = page_limit(request.query.get("limit"), DEFAULT_LIMIT, MAX_LIMIT, problems)
    after_id = 0
    cursor = request.query.get("cursor")
    if cursor:
        decoded = decode_history_cursor(cursor)
        if decoded is None:
            problems["cursor"] = "use the `next` value of a previous page"
        else:
            after_id = decoded
    if problems:
        raise ApiError(400, "invalid_parameter", "Some query parameters are not valid.",
                       problems)
    return limit, after_id


def _plausible(identifier: str) -> bool:
    """Ids are short ASCII: anything else is no customer (and never reaches the database,
    which refuses a NUL in a string)."""
    return identifier.isascii() and identifier.isprintable() and len(identifier) <= 64


def _page(rows: list[Any], limit: int) -> HistoryPage:
    following = encode_history_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return HistoryPage.model_validate({"items": [view(r) for r in rows[:limit]],
                                       "next": following})


def history_routes(store: TicketStore) -> list[web.RouteDef]:
    @_answers_errors
    async def ticket_history(request: web.Request) -> web.StreamResponse:
        ticket_ref = request.match_info["ticket_id"]
        limit, after_id = _page_query(request)
        # In scope (the middleware answered 404 otherwise), or the first-contact agent's.
        found = await store.ticket_access(ticket_ref)
        if found is None:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_ref}.")
        async with store.engine.connect() as connection:
            rows = await ticket_page(connection, found[0], after_id, limit + 1)
        return json_response(_page(rows, limit))

    @_answers_errors
    async def customer_history(request: web.Request) -> web.StreamResponse:
        customer_id = request.match_info["customer_id"]
        limit, after_id = _page_query(request)
        principal = current()
        async with store.engine.connect() as connection:
            known = (await connection.execute(select(CUSTOMERS.c.id).where(
                CUSTOMERS.c.id == customer_id))).first() if _plausible(customer_id) else None
            if known is None:
                raise ApiError(404, "customer_not_found", f"No customer {customer_id}.")
            rows = await customer_page(connection, customer_id, after_id, limit + 1,
                                       principal)
        return json_response(_page(rows, limit))

    return [web.get(f"{PREFIX}/tickets/{{ticket_id}}/history", ticket_history),
            web.get(f"{PREFIX}/customers/{{customer_id}}/history", customer_history)]


def history_paths(ok: Any, error: Any, query: Any, bad_parameter: Any, unauthorized: Any,
                  unavailable: Any) -> dict[str, Any]:
    """The OpenAPI paths of both history reads (openapi.py passes its helpers)."""
    page = [query("limit", "Page size.", {"type": "integer", "minimum": 1,
                                          "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}),
            query("cursor", "The `next` value of the previous page (opaque).")]
    order = ("Oldest first (ascending `id`, the commit order), so a page never shifts as new "
             "changes arrive. Append-only: no route edits or deletes an entry.")
    return {
        f"{PREFIX}/tickets/{{ticket_id}}/history": {"get": {
            "operationId": "getTicketHistory",
            "summary": "The ticket's audit history: every change, who made it, before and "
                       "after",
            "description": order + " Includes the history of the tickets merged into this "
                                   "one.",
            "parameters": [{"name": "ticket_id", "in": "path", "required": True,
                            "description": "The ticket's id, or its number (digits)",
                            "schema": {"type": "string"}}, *page],
            "responses": {"200": ok("HistoryPage", "A page of history entries"),
                          "400": bad_parameter, "401": unauthorized,
                          "404": error("No such ticket in the caller's scope",
                                       ["ticket_not_found"]),
                          "503": unavailable},
        }},
        f"{PREFIX}/customers/{{customer_id}}/history": {"get": {
            "operationId": "getCustomerHistory",
            "summary": "The customer's audit history: their own changes and those of their "
                       "tickets in the caller's scope",
            "description": order,
            "parameters": [{"name": "customer_id", "in": "path", "required": True,
                            "schema": {"type": "string"}}, *page],
            "responses": {"200": ok("HistoryPage", "A page of history entries"),
                          "400": bad_parameter, "401": unauthorized,
                          "404": error("No such customer", ["customer_not_found"]),
                          "503": unavailable},
        }},
    }
