"""The agent API's first write endpoints of issue 16: acknowledge, change a customer (`PATCH
/api/v1/customers/{id}`), and their OpenAPI paths (advancing an escalation step moved to
escalations_api.py with issue 17's roles).

The one admin token guards them (auth_middleware); roles come with the agent workflow issue.
Each writes its change and events in one transaction on the store's clock (domain time).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError
from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from .api import PREFIX, ApiError, _answers_errors, json_response
from .events import PlannedEvent
from .fields import FieldSet, FieldsInvalid
from .replies import TicketNotFound
from .schemas import CustomerPatch
from .statements import CUSTOMERS, CoreWriteStatements
from .store import TicketStore, append_events
from .timeline import acknowledge_ticket

Body = TypeVar("Body", bound=BaseModel)


class CustomerNotFound(LookupError):
    pass


class CustomerTombstone(Exception):
    """The customer was merged into another (merging.py): change that one."""

    def __init__(self, merged_into: str) -> None:
        super().__init__(merged_into)
        self.merged_into = merged_into


async def _body(request: web.Request, model: type[Body], *, empty_ok: bool = False) -> Body:
    raw = await request.read()
    try:
        data = orjson.loads(raw) if raw.strip() or not empty_ok else {}
        return model.model_validate(data)
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, "invalid_body", "The body is not JSON.", {"body": str(exc)}) from exc
    except ValidationError as exc:
        fields = {".".join(str(p) for p in e["loc"]) or "body": e["msg"] for e in exc.errors()}
        raise ApiError(422, "invalid_body", "Some fields are not valid.", fields) from exc


def _ticket_ref(request: web.Request) -> str:
    ticket_ref = request.match_info["ticket_id"]
    if not ticket_ref.isascii() or len(ticket_ref) > 64:
        raise ApiError(404, "ticket_not_found", f"No ticket {ticket_ref}.")
    return ticket_ref


def patch_customer(connection: Connection, customer_id: str, patch: CustomerPatch,
                   now: datetime, field_set: FieldSet | None = None) -> None:
    """The keys given change; `fields` merges, a key set to null is removed, each value
    checked by `field_set` (FieldsInvalid). A change writes `customer.updated` with
    `changes: {key: [before, after]}`."""
    query = select(CUSTOMERS).where(CUSTOMERS.c.id == customer_id)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    row: Any = connection.execute(query).first()
    if row is None:
        raise CustomerNotFound(customer_id)
    if row.merged_into is not None:
        raise CustomerTombstone(row.merged_into)
    values: dict[str, Any] = {}
    given = patch.model_fields_set
    for key in ("name", "vip_level", "language"):
        if key in given and getattr(patch, key) != getattr(row, key):
            if key == "vip_level" and patch.vip_level is None:
                continue  # vip_level is never null (0 is "not a VIP")
            values[key] = getattr(patch, key)
    if "fields" in given and patch.fields is not None:
        merged = (field_set or FieldSet(None)).merge(row.fields, patch.fields)
        if merged != (row.fields or {}):
            values["fields"] = merged
    if not values:
        return
    changes = {key: [getattr(row, key) if key != "fields" else (row.fields or {}), value]
               for key, value in values.items()}
    connection.execute(update(CUSTOMERS).where(CUSTOMERS.c.id == customer_id)
                       .values(**values, updated_at=now))
    if values.keys() & {"name", "fields"}:  # in the documents of their tickets (search)
        CoreWriteStatements(connection).index_tickets([], [customer_id])
    append_events(CoreWriteStatements(connection), [PlannedEvent(
        "customer.updated", now, None, customer_id, "agent", {"changes": changes})])


def timing_routes(store: TicketStore) -> list[web.RouteDef]:
    @_answers_errors
    async def acknowledge(request: web.Request) -> web.StreamResponse:
        ticket_ref = _ticket_ref(request)
        now = store.clock.now()
        try:
            ticket_id, _ = await store.write(lambda c: acknowledge_ticket(
                c, ticket_ref, now, store.timelines))
        except TicketNotFound as exc:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_ref}.") from exc
        ticket = await store.get_ticket(ticket_id)
        assert ticket is not None
        return json_response(ticket)

    @_answers_errors
    async def change_customer(request: web.Request) -> web.StreamResponse:
        customer_id = request.match_info["customer_id"]
        patch = await _body(request, CustomerPatch)
        if patch.name is not None and "\x00" in patch.name:
            raise ApiError(422, "invalid_body", "The name holds a NUL character.",
                           {"name": "must not contain NUL (U+0000)"})
        if "\\u0000" in orjson.dumps(patch.fields).decode():  # JSON writes NUL escaped
            raise ApiError(422, "invalid_body", "A field holds a NUL character.",
                           {"fields": "must not contain NUL (U+0000)"})
        now = store.clock.now()
        try:
            await store.write(lambda c: patch_customer(c, customer_id, patch, now,
                                                       store.tickets.customer_field_set))
        except CustomerNotFound as exc:
            raise ApiError(404, "customer_not_found", f"No customer {customer_id}.") from exc
        except CustomerTombstone as exc:
            raise ApiError(409, "customer_merged", f"Customer {customer_id} was merged into "
                           f"{exc.merged_into}: change that one.",
                           {"merged_into": exc.merged_into}) from exc
        except FieldsInvalid as exc:
            raise ApiError(422, "invalid_fields", "Some field values cannot be written; "
                           "`fields` says why for each.", exc.problems) from exc
        customer = await store.get_customer(customer_id)
        assert customer is not None
        return json_response(customer)

    return [
        web.post(f"{PREFIX}/tickets/{{ticket_id}}/acknowledge", acknowledge),
        web.patch(f"{PREFIX}/customers/{{customer_id}}", change_customer),
    ]


def timing_paths(ok: Any, error: Any, ref: str, unauthorized: Any,
                 unavailable: Any) -> dict[str, Any]:
    """The OpenAPI paths of these endpoints (openapi.py passes its helpers)."""
    ticket = {"name": "ticket_id", "in": "path", "required": True,
              "description": "The ticket's id, or its number (digits)",
              "schema": {"type": "string"}}
    not_found = error("No such ticket", ["ticket_not_found"])
    return {
        "/api/v1/tickets/{ticket_id}/acknowledge": {"post": {
            "operationId": "acknowledgeTicket",
            "summary": "Acknowledge the ticket: stops its first-response clock and overflow "
                       "moves, completes an escalation step done when acknowledged",
            "description": "Sets `acknowledged_at` (again: no change), marks the pending "
                           "overflow and first-response timers `done` and writes "
                           "`ticket.acknowledged`. No body.",
            "parameters": [ticket],
            "responses": {"200": ok("TicketDetail", "The ticket as it now is"),
                          "401": unauthorized, "404": not_found, "503": unavailable},
        }},
    }


def customer_patch_operation(ok: Any, error: Any, ref: str, unauthorized: Any,
                             unavailable: Any) -> dict[str, Any]:
    return {
        "operationId": "changeCustomer",
        "summary": "Change a customer's name, vip_level (0–9), language (BCP 47) or fields",
        "description": "Only the keys given change; `fields` merges into the stored ones and a "
                       "key set to null is removed. Writes `customer.updated` with `changes`.",
        "parameters": [{"name": "customer_id", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": ref.format(model="CustomerPatch")},
            "example": {"vip_level": 3, "language": "zh-CN",
                        "fields": {"member_no": "M-10086"}}}}},
        "responses": {"200": ok("CustomerView", "The customer as it now is"),
                      "401": unauthorized,
                      "404": error("No such customer", ["customer_not_found"]),
                      "409": error("The customer was merged into another (`fields."
                                   "merged_into`)", ["customer_merged"]),
                      "422": error("The body is not valid, or a field value cannot be "
                                   "written (one message per field)",
                                   ["invalid_body", "invalid_fields"]),
                      "503": unavailable},
    }
