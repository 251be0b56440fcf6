"""`GET /api/v1/search`: ticket search for agents, and its OpenAPI path.

`q` is only ever data: it is cut into tokens (intake/search_text.py) and nothing else of it
reaches SQL or a query language, so `"退款" OR 1=1`, `NEAR(`, `*` or a lone `"` search for
their words or find nothing; a `q` with no letter or digit at all answers an empty page. Over
1,000 characters or 200 tokens: `422 query_too_long`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from intake.search_text import MAX_QUERY_CHARS, MAX_QUERY_TOKENS, QueryTooLong, parse_query

from .api import PREFIX, ApiError, _answers_errors, json_response, page_limit
from .schemas import STATUSES
from .scope import current
from .search import search_tickets
from .store import MAX_LIMIT, CursorInvalid, TicketStore

SEARCH_PARAMS = frozenset(("q", "desk", "status", "limit", "cursor"))
DEFAULT_LIMIT = 20


def scope_desks(request: web.Request) -> Sequence[str] | None:
    """The desks the caller's token may see (scope.py); None: all (the admin token). A
    first-contact agent finds the tickets they keep outside their desks by the ticket list's
    `first_contact=me`, not here: search is by desk."""
    desks = current().desks
    return None if desks is None else sorted(desks)


def _search_query(query: Any) -> tuple[str, str | None, tuple[str, ...], int, str | None]:
    problems: dict[str, str] = {}
    for name in query:
        if name not in SEARCH_PARAMS:
            problems[name] = "unknown parameter; known: " + ", ".join(sorted(SEARCH_PARAMS))
        elif len(query.getall(name)) > 1:
            problems[name] = "given more than once"
    values = {name: (query.get(name) or "").strip() or None for name in SEARCH_PARAMS}
    if values["q"] is None:
        problems["q"] = "required: the words to search for"
    statuses: tuple[str, ...] = ()
    if values["status"] is not None:
        statuses = tuple(s.strip() for s in values["status"].split(",") if s.strip())
        if not statuses or any(s not in STATUSES for s in statuses):
            problems["status"] = ("one or more (comma-separated) of " + ", ".join(STATUSES)
                                  + "; `open` means not resolved, closed or merged")
    limit = page_limit(values["limit"], DEFAULT_LIMIT, MAX_LIMIT, problems)
    if problems:
        raise ApiError(400, "invalid_parameter", "Some query parameters are not valid.",
                       problems)
    return values["q"] or "", values["desk"], statuses, limit, values["cursor"]


def search_routes(store: TicketStore) -> list[web.RouteDef]:
    @_answers_errors
    async def search(request: web.Request) -> web.StreamResponse:
        q, desk, statuses, limit, cursor = _search_query(request.query)
        try:
            phrases = parse_query(q)
        except QueryTooLong as exc:
            raise ApiError(422, "query_too_long", "The search is too long.",
                           {"q": str(exc)}) from exc
        desks = scope_desks(request)
        if desk is not None and desks is not None and desk not in desks:
            raise ApiError(403, "desk_not_in_scope", f"Desk {desk} is not in your scope.",
                           {"desk": "not one of your desks"})
        try:
            page = await search_tickets(store, phrases, desks=desks, desk=desk,
                                        statuses=statuses, limit=limit, cursor=cursor)
        except CursorInvalid as exc:
            raise ApiError(400, "invalid_parameter", "The cursor is not valid.",
                           {"cursor": "use the `next` value of a previous page"}) from exc
        return json_response(page)

    return [web.get(f"{PREFIX}/search", search)]


def search_path(ok: Any, error: Any, query: Any, bad_parameter: Any, unauthorized: Any,
                unavailable: Any) -> dict[str, Any]:
    """The OpenAPI path of `GET /api/v1/search` (openapi.py passes its helpers)."""
    statuses = "|".join(STATUSES)
    return {"/api/v1/search": {"get": {
        "operationId": "searchTickets",
        "summary": "Search tickets: number, subject, messages, tags, fields, customer",
        "description": (
            "Chinese without spaces (one- and two-character words too), Traditional finds "
            "Simplified, full-width finds half-width, Latin words and numbers by prefix. "
            "Several words: every one must match; a quoted part: its words adjacent. Ranked "
            "by relevance, then newest. Each item is the ticket as in the ticket list plus "
            "`snippet` (HTML-escaped text, hits in `<mark>`). `q` is never query syntax."),
        "parameters": [
            query("q", f"The search: at most {MAX_QUERY_CHARS} characters and "
                  f"{MAX_QUERY_TOKENS} tokens.",
                  {"type": "string", "minLength": 1}, required=True),
            query("desk", "Only tickets owned by this desk."),
            query("status", "One status, or several comma-separated. `open` means not "
                  "resolved, closed or merged.",
                  {"type": "string", "pattern": f"^({statuses})(,({statuses}))*$"}),
            query("limit", "Page size.", {"type": "integer", "minimum": 1,
                                          "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}),
            query("cursor", "The `next` value of the previous page (opaque)."),
        ],
        "responses": {
            "200": ok("SearchPage", "A page of matching tickets, best first"),
            "400": bad_parameter, "401": unauthorized,
            "403": error("The desk is outside the token's scope", ["desk_not_in_scope"]),
            "422": error("The search is too long", ["query_too_long"]),
            "503": unavailable,
        },
    }}}
