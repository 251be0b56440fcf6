"""The merge endpoints (issue 17): their bodies, handlers and OpenAPI paths (merging.py does
the work).

- `POST /api/v1/tickets/{target}/merge {"source_ids": […], "note",
  "confirm_different_customers"}`: agents, for tickets of their desks (Zendesk lets agents
  merge the tickets of their groups); `200` with the target. `422 merge_into_self`, `409
  ticket_merged`, `409 ticket_closed` (the target), `409 customers_differ`, `409
  not_customer_facing`, `404 ticket_not_found` (a source unknown or outside the caller's desks),
  `403 read_only_access` (a source the caller only follows as its first contact).
- `POST /api/v1/customers/{target}/merge {"source_id"}`: supervisors and admins (a customer is
  shared across desks, and merging moves every desk's tickets of the source: not an agent's
  call; Zendesk leaves it to admins); `200` with the target. `422 merge_into_self`, `409
  customer_merged`, `404 customer_not_found`.

The target ticket's scope is the auth middleware's (api.py: 404 outside the caller's desks);
the sources' is checked on their rows, locked, in the merge's transaction.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field, field_validator

from .api import PREFIX, ApiError, _answers_errors, json_response
from .merging import (
    MAX_SOURCES,
    CustomerMerged,
    CustomerNotFound,
    CustomersDiffer,
    MergeRefused,
    TicketMerged,
    merge_customers,
    merge_tickets,
)
from .replies import TicketNotFound
from .schemas import View
from .scope import current
from .store import TicketStore
from .timing_api import _body, _ticket_ref


class TicketMergeRequest(View):
    """`POST /api/v1/tickets/{id}/merge`."""

    source_ids: list[str] = Field(min_length=1, max_length=MAX_SOURCES,
                                  description="the tickets merged into this one: ids or numbers")
    note: str | None = Field(default=None, max_length=100_000,
                             description="why; kept as an internal note on the target")
    confirm_different_customers: bool = Field(
        default=False, description="merge tickets of another customer too (else `409 "
                                   "customers_differ`)")

    @field_validator("source_ids")
    @classmethod
    def plain_refs(cls, values: list[str]) -> list[str]:
        for value in values:
            if not value or len(value) > 64 or not value.isascii() or "\x00" in value:
                raise ValueError("each an ASCII ticket id or number of at most 64 characters")
        return values

    @field_validator("note")
    @classmethod
    def no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL (U+0000)")
        return value


class CustomerMergeRequest(View):
    """`POST /api/v1/customers/{id}/merge`."""

    source_id: str = Field(min_length=1, max_length=64,
                           description="the customer merged into this one (left as a tombstone)")

    @field_validator("source_id")
    @classmethod
    def no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("must not contain NUL (U+0000)")
        return value


MERGE_BODIES = (TicketMergeRequest, CustomerMergeRequest)


def _refused(exc: MergeRefused) -> ApiError:
    if isinstance(exc, TicketMerged):
        return ApiError(409, exc.code, f"Ticket {exc.ticket} is merged already (into "
                        f"{exc.merged_into}).", {"ticket": exc.ticket})
    if isinstance(exc, CustomersDiffer):
        return ApiError(409, exc.code, f"Tickets {', '.join(exc.tickets)} belong to another "
                        "customer: send `confirm_different_customers: true` to merge them.",
                        {"source_ids": ", ".join(exc.tickets)})
    if isinstance(exc, CustomerMerged):
        return ApiError(409, exc.code, f"Customer {exc.customer_id} is merged already (into "
                        f"{exc.merged_into}).", {"customer": exc.customer_id})
    messages = {
        "merge_into_self": (422, "Nothing merges into itself."),
        "ticket_closed": (409, "The target is closed: merge into a ticket still worked on."),
        "not_customer_facing": (409, "A linked internal ticket (a copy or collaborator) shows "
                                     "another ticket's conversation: merge that one."),
        "read_only_access": (403, "You are only this ticket's first-contact agent: you may "
                                  "read it and add internal notes."),
    }
    status, message = messages.get(exc.code, (409, str(exc)))
    return ApiError(status, exc.code, message, {"ticket": str(exc)})


def merge_routes(store: TicketStore) -> list[web.RouteDef]:
    @_answers_errors
    async def merge_into_ticket(request: web.Request) -> web.StreamResponse:
        target = _ticket_ref(request)
        body = await _body(request, TicketMergeRequest)
        note = (body.note or "").strip() or None
        principal, now = current(), store.clock.now()
        try:
            ticket_id = await store.write(lambda c: merge_tickets(
                c, target, body.source_ids, note, body.confirm_different_customers, now,
                principal))
        except TicketNotFound as exc:
            raise ApiError(404, "ticket_not_found", f"No ticket {exc}.",
                           {"ticket": str(exc)}) from exc
        except MergeRefused as exc:
            raise _refused(exc) from exc
        ticket = await store.get_ticket(ticket_id)
        if ticket is None:
            raise ApiError(404, "ticket_not_found", f"No ticket {target}.")
        return json_response(ticket)

    @_answers_errors
    async def merge_into_customer(request: web.Request) -> web.StreamResponse:
        target = request.match_info["customer_id"]
        body = await _body(request, CustomerMergeRequest)
        actor, now = current().actor, store.clock.now()
        try:
            await store.write(lambda c: merge_customers(c, target, body.source_id, now, actor))
        except CustomerNotFound as exc:
            raise ApiError(404, "customer_not_found", f"No customer {exc}.",
                           {"customer": str(exc)}) from exc
        except MergeRefused as exc:
            raise _refused(exc) from exc
        customer = await store.get_customer(target)
        assert customer is not None
        return json_response(customer)

    return [
        web.post(f"{PREFIX}/tickets/{{ticket_id}}/merge", merge_into_ticket),
        web.post(f"{PREFIX}/customers/{{customer_id}}/merge", merge_into_customer),
    ]


def merge_paths(ok: Any, error: Any, ref: str, unauthorized: Any,
                unavailable: Any) -> dict[str, Any]:
    """The OpenAPI paths of these endpoints (openapi.py passes its helpers)."""

    def body(model: str, example: dict[str, Any]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {
            "schema": {"$ref": ref.format(model=model)}, "example": example}}}

    return {
        "/api/v1/tickets/{ticket_id}/merge": {"post": {
            "operationId": "mergeTickets",
            "summary": "Merge tickets into this one (agents, in their desks)",
            "description": "Messages (each keeps `original_ticket_number`), notes, attachments, "
                           "tags and reminders move here; each source becomes `merged` with "
                           "`merged_into`, still readable, and later messages threaded to it "
                           "land here. The sources' other timers are cancelled. One "
                           "transaction; `ticket.merged` on each ticket.",
            "parameters": [{"name": "ticket_id", "in": "path", "required": True,
                            "description": "The target: its id, or its number (digits)",
                            "schema": {"type": "string"}}],
            "requestBody": body("TicketMergeRequest", {"source_ids": ["1002"],
                                                       "note": "同一客户重复提交"}),
            "responses": {
                "200": ok("TicketDetail", "The target as it now is"),
                "401": unauthorized,
                "403": error("A source you may only read (first contact)",
                             ["read_only_access"]),
                "404": error("No such ticket in your desks (the target or a source)",
                             ["ticket_not_found"]),
                "409": error("A source or the target is merged, the target closed, a source "
                             "another customer's (unconfirmed), or a linked internal ticket",
                             ["ticket_merged", "ticket_closed", "customers_differ",
                              "not_customer_facing"]),
                "422": error("Not a valid body, or the target among the sources",
                             ["invalid_body", "merge_into_self"]),
                "503": unavailable}}},
        "/api/v1/customers/{customer_id}/merge": {"post": {
            "operationId": "mergeCustomers",
            "summary": "Merge a customer into this one (supervisors and admins)",
            "description": "Identities, tickets, messages and field values move here (this "
                           "customer's values win); the source stays as a tombstone with "
                           "`merged_into`; later messages from its identities land here. One "
                           "transaction; `customer.merged` on both.",
            "parameters": [{"name": "customer_id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "requestBody": body("CustomerMergeRequest", {"source_id": "8c1e…"}),
            "responses": {
                "200": ok("CustomerView", "The target as it now is"),
                "401": unauthorized,
                "404": error("No such customer (the target or the source)",
                             ["customer_not_found"]),
                "409": error("The source or the target is merged already",
                             ["customer_merged"]),
                "422": error("Not a valid body, or the source is the target",
                             ["invalid_body", "merge_into_self"]),
                "503": unavailable}}},
    }
