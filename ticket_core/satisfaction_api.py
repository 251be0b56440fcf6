"""`POST /api/v1/tickets/{id}/satisfaction`: a rating an agent took down (回访 by phone), and
its OpenAPI path. The rating page customers use is csat_pages.py, outside the agent API."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .api import PREFIX, ApiError, _answers_errors, json_response
from .replies import TicketNotFound
from .satisfaction import answer_by_agent
from .schemas import SatisfactionRecord, SatisfactionView
from .scope import current
from .store import TicketStore
from .timing_api import _body, _ticket_ref


def satisfaction_routes(store: TicketStore) -> list[web.RouteDef]:
    @_answers_errors
    async def record(request: web.Request) -> web.StreamResponse:
        ticket_ref = _ticket_ref(request)
        body = await _body(request, SatisfactionRecord)
        comment = (body.comment or "").strip() or None
        if comment is not None and "\x00" in comment:
            raise ApiError(422, "invalid_body", "The comment holds a NUL character.",
                           {"comment": "must not contain NUL (U+0000)"})
        actor = current().actor  # the writer's thread does not see the request's context
        now = store.clock.now()
        try:
            satisfaction = await store.write(lambda c: answer_by_agent(
                c, ticket_ref, body.score, comment, body.via, now, actor))
        except TicketNotFound as exc:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_ref}.") from exc
        response = json_response(SatisfactionView.model_validate(satisfaction))
        response.set_status(201)
        response.headers["Location"] = f"{PREFIX}/tickets/{ticket_ref}"
        return response

    return [web.post(f"{PREFIX}/tickets/{{ticket_id}}/satisfaction", record)]


def satisfaction_paths(ok: Any, error: Any, ref: str, unauthorized: Any,
                       unavailable: Any) -> dict[str, Any]:
    """The agent API's satisfaction path (openapi.py passes its helpers). The rating page
    (`GET`/`POST /csat/{token}`) is for customers, not in this document: README.md."""
    return {"/api/v1/tickets/{ticket_id}/satisfaction": {"post": {
        "operationId": "recordSatisfaction",
        "summary": "Record a rating the customer gave an agent (回访 by phone)",
        "description": "Replaces the ticket's rating (the first answer's time is kept); both "
                       "answers stay in the event log (`satisfaction.answered`). A "
                       "satisfaction request's link keeps its own state.",
        "parameters": [{"name": "ticket_id", "in": "path", "required": True,
                        "description": "The ticket's id, or its number (digits)",
                        "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": ref.format(model="SatisfactionRecord")},
            "example": {"score": 4, "comment": "电话回访：问题已解决", "via": "phone"}}}},
        "responses": {"201": ok("SatisfactionView", "The ticket's satisfaction"),
                      "401": unauthorized,
                      "404": error("No such ticket in the caller's scope",
                                   ["ticket_not_found"]),
                      "422": error("A score that is not an integer from 1 to 5, or another "
                                   "field not valid", ["invalid_body"]),
                      "503": unavailable},
    }}}
