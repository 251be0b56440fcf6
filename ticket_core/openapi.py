"""The OpenAPI 3.1 document of the agent API, its schemas derived from the response models."""

from __future__ import annotations

from typing import Any, get_args

from pydantic.json_schema import models_json_schema

from intake.message import Channel, IdentityKind, Priority

from . import agent_schemas, workflow_schemas
from .agents_openapi import AGENT_MODELS, BODY_MODELS, add_scope_answers, agent_paths
from .events import EVENT_TYPES
from .schemas import (
    STATUSES,
    AdvanceRequest,
    CustomerPage,
    CustomerPatch,
    CustomerView,
    DecisionPage,
    ErrorBody,
    FieldsView,
    MessageView,
    NoteRequest,
    NoteView,
    ReplyRequest,
    SatisfactionRecord,
    SatisfactionView,
    TestClockRequest,
    TestClockView,
    TicketDetail,
    TicketPage,
    TicketPatch,
)
from .ticket_order import SLA_STATES, SORTS

REF = "#/components/schemas/{model}"


def _timing() -> tuple[Any, Any, Any, Any]:
    from .decisions import decisions_path  # these import the API
    from .ticket_patch import patch_paths
    from .timing_api import customer_patch_operation, timing_paths

    return customer_patch_operation, timing_paths, decisions_path, patch_paths


def _lifecycle() -> tuple[Any, Any]:
    from .clock_api import clock_paths  # these import the API
    from .notes import note_paths

    return note_paths, clock_paths


def _search() -> tuple[Any, Any]:
    from .search import SearchPage  # these import the API
    from .search_api import search_path

    return SearchPage, search_path


def _history() -> tuple[Any, Any]:
    from .history_api import HISTORY_MODELS, history_paths  # it imports the API

    return HISTORY_MODELS, history_paths


def _escalations() -> tuple[Any, tuple[Any, ...], Any]:
    from .escalations_api import ESCALATION_BODIES, escalation_paths  # these import the API
    from .ticket_create import CREATE_BODIES, create_operation

    return escalation_paths, (*ESCALATION_BODIES, *CREATE_BODIES), create_operation


def _assignment() -> tuple[Any, tuple[Any, ...]]:
    from .assignment_api import ASSIGNMENT_BODIES, assignment_paths  # it imports the API

    return assignment_paths, ASSIGNMENT_BODIES


def _merging() -> tuple[Any, tuple[Any, ...]]:
    from .merge_api import MERGE_BODIES, merge_paths  # it imports the API

    return merge_paths, MERGE_BODIES


def _error(description: str, codes: list[str]) -> dict[str, Any]:
    return {
        "description": f"{description} (`error`: {', '.join(f'`{c}`' for c in codes)})",
        "content": {"application/json": {
            "schema": {"$ref": REF.format(model="ErrorBody")},
            "example": {"error": codes[0], "message": description, "fields": {}},
        }},
    }


def _ok(model: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


UNAUTHORIZED = _error("Missing or wrong bearer token", ["unauthorized"])
UNAVAILABLE = _error("The database is not reachable; retry later", ["storage_unavailable"])
BAD_PARAMETER = _error("A query parameter is not valid; `fields` names each one and why",
                       ["invalid_parameter"])


CALL_ID = {"name": "call_id", "in": "path", "required": True,
           "description": "The PBX's id of the call", "schema": {"type": "string"}}
LINE = {"name": "line", "in": "query", "required": False,
        "description": "The line, when two lines' calls share an id",
        "schema": {"type": "string"}}
CALL_OK = {"description": "The call", "content": {"application/json": {"schema": {
    "type": "object",
    "required": ["line", "call_id", "state", "direction", "call", "pop", "pick", "history",
                 "ticket_id", "message_id", "recorded_at"],
    "properties": {"line": {"type": "string"}, "call_id": {"type": "string"},
                   "state": {"type": "string"}, "direction": {"type": "string"},
                   "call": {"type": "object"}, "pop": {"type": ["object", "null"]},
                   "pick": {"type": ["object", "null"]}, "history": {"type": "array"},
                   "ticket_id": {"type": ["string", "null"]},
                   "message_id": {"type": ["string", "null"]},
                   "recorded_at": {"type": ["string", "null"]}}}}}}


def build_openapi() -> dict[str, Any]:
    """The document served at GET /api/v1/openapi.json."""
    customer_patch_operation, timing_paths, decisions_path, patch_paths = _timing()
    patch = patch_paths(_ok, _error, REF, UNAUTHORIZED, UNAVAILABLE, BAD_PARAMETER)
    note_paths, clock_paths = _lifecycle()
    search_page, search_path = _search()
    assignment_paths, assignment_bodies = _assignment()
    history_models, history_paths = _history()
    merge_paths, merge_bodies = _merging()
    escalation_paths, escalation_bodies, create_operation = _escalations()
    _, defs = models_json_schema(
        [*((m, "serialization") for m in (TicketPage, TicketDetail, CustomerView, CustomerPage,
                                          ErrorBody, MessageView, DecisionPage, FieldsView,
                                          NoteView, TestClockView, search_page,
                                          *history_models)),
         (ReplyRequest, "validation"), (TicketPatch, "validation"),
         (AdvanceRequest, "validation"), (CustomerPatch, "validation"),
         (NoteRequest, "validation"), (TestClockRequest, "validation"),
         (SatisfactionRecord, "validation"), (SatisfactionView, "serialization"),
         *((getattr(agent_schemas, m), "serialization") for m in AGENT_MODELS),
         *((getattr(agent_schemas, m), "validation") for m in BODY_MODELS),
         *((m, "validation") for m in assignment_bodies),
         *((m, "validation") for m in merge_bodies),
         *((m, "validation") for m in escalation_bodies),
         *((getattr(workflow_schemas, m), "serialization")
           for m in workflow_schemas.WORKFLOW_MODELS),
         *((getattr(workflow_schemas, m), "validation")
           for m in workflow_schemas.WORKFLOW_BODIES)],
        ref_template=REF)
    ticket_path_parameter = {"name": "ticket_id", "in": "path", "required": True,
                             "description": "The ticket's id, or its number (digits)",
                             "schema": {"type": "string"}}
    list_tickets_params = [
        _query("channel", "Only tickets opened on this channel.",
               {"type": "string", "enum": list(get_args(Channel))}),
        _query("account", "Only tickets opened on this channel account."),
        _query("desk", "Only tickets owned by this desk."),
        _query("skill_group", "Only tickets of this skill group."),
        _query("status", "One status, or several comma-separated. `open` means not "
               "resolved, closed or merged.",
               {"type": "string", "pattern": "^(" + "|".join(STATUSES) + ")(,("
                + "|".join(STATUSES) + "))*$"}),
        _query("customer_id", "Only this customer's tickets."),
        _query("priority", "Only tickets of this priority.",
               {"type": "string", "enum": list(get_args(Priority))}),
        _query("category", "Only tickets of this category."),
        _query("idempotency_key", "The ticket holding the message with this idempotency key."),
        _query("reference", "The ticket holding the message with this customer-quotable "
               "reference (e.g. a web form confirmation)."),
        _query("tag", "Only tickets with this tag (normalised as tags are: `VIP` finds "
               "`vip`)."),
        _query("assignee", "`me` (an agent's token), `none` (waiting in a queue) or an "
               "agent id."),
        _query("first_contact", "`me`: tickets whose first contact (首问负责人) is the caller.",
               {"type": "string", "enum": ["me"]}),
        _query("reminder", "`due`: tickets with a due reminder of the caller's (the admin "
               "token: anyone's).", {"type": "string", "enum": ["due"]}),
        _query("sla", "`breached`: tickets with an SLA breach fired; `warning`: warned and "
               "not (yet) breached.", {"type": "string", "enum": list(SLA_STATES)}),
        _query("sort", "`created` (the default: newest first), `updated` (most recently "
               "changed first), `due` (the nearest SLA due time first; no clock running: "
               "last), `priority` (urgent first, then the oldest). A cursor belongs to its "
               "order.", {"type": "string", "enum": list(SORTS)}),
        _query("limit", "Page size.",
               {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
        _query("cursor", "The `next` value of the previous page (opaque)."),
    ]
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "Intake gateway agent API",
            "version": "1",
            "description": "Tickets, their messages and customers with their identities. "
                           "Every call needs `Authorization: Bearer <token>` except this "
                           "document. Errors are `{error, message, fields}` with a stable "
                           "`error` code. Lists are `{items, next}`; fetch the next page with "
                           "`?cursor=<next>` and the same filters. Unknown query parameters "
                           "are refused; an empty parameter counts as absent. Any other path "
                           "under /api/v1 answers 404 `not_found` (405 `method_not_allowed` "
                           "for a known path with another method). A request line or header over "
                           "8,190 bytes is refused by the HTTP server itself with a plain-text "
                           "400 before any of this applies.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": {
            "/api/v1/tickets": {"get": {
                "operationId": "listTickets",
                "summary": "List tickets, newest first (or by `sort`)",
                "parameters": list_tickets_params,
                "responses": {"200": _ok("TicketPage", "A page of tickets"),
                              "400": BAD_PARAMETER, "401": UNAUTHORIZED, "503": UNAVAILABLE},
            }, "post": create_operation(_ok, _error, REF, UNAUTHORIZED, UNAVAILABLE)},
            "/api/v1/tickets/{ticket_id}": {"get": {
                "operationId": "getTicket",
                "summary": "A ticket with its messages in source order",
                "parameters": [ticket_path_parameter],
                "responses": {"200": _ok("TicketDetail", "The ticket"),
                              "401": UNAUTHORIZED,
                              "404": _error("No such ticket", ["ticket_not_found"]),
                              "503": UNAVAILABLE},
            }, "patch": patch["patch"]},
            "/api/v1/fields": patch["fields"],
            "/api/v1/tickets/{ticket_id}/replies": {"post": {
                "operationId": "replyToTicket",
                "summary": "Answer the customer: store an outgoing message and send it",
                "description": "Stores the reply on the ticket (`direction: out`, `kind: reply`, "
                               "`delivery.status: pending`) and, in the same transaction, an "
                               "outbox row; the relay then publishes it to the channel's "
                               "connector. The channel is the ticket's own when it can reply, "
                               "else another configured channel that reaches one of the "
                               "customer's identities. `GET /api/v1/tickets/{id}` shows the "
                               "delivery status as connectors report it (`sent`, `delivered`, "
                               "`read`, `failed` with `reason`, `window_expired`, "
                               "`suppressed`); a message no connector takes is `failed`, "
                               "reason `no_connector`.",
                "parameters": [ticket_path_parameter],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": REF.format(model="ReplyRequest")},
                    "example": {"text": "Your parcel left our warehouse today."}}}},
                "responses": {"201": _ok("MessageView", "The stored outgoing message"),
                              "401": UNAUTHORIZED,
                              "404": _error("No such ticket", ["ticket_not_found"]),
                              "409": _error("A linked internal ticket (a copy or a "
                                            "collaborator's): reply on the customer-facing one",
                                            ["not_customer_facing"]),
                              "422": _error("The body is not valid (an empty text, an unknown "
                                            "attachment), or no channel can reach the customer",
                                            ["invalid_body", "no_reply_channel"]),
                              "503": UNAVAILABLE},
            }},
            "/api/v1/attachments/{sha256}": {"get": {
                "operationId": "getAttachment",
                "summary": "The bytes of an attachment some stored message carries",
                "description": "Served with the stored content type, `Content-Disposition: "
                               "attachment` and the stored file name (RFC 6266, `filename*` "
                               "for non-ASCII), `X-Content-Type-Options: nosniff` and "
                               "`Content-Security-Policy: default-src 'none'; sandbox`.",
                "parameters": [{"name": "sha256", "in": "path", "required": True,
                                "description": "The attachment's SHA-256, 64 lower-case hex "
                                               "digits (its `sha256` field)",
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The attachment's bytes",
                                      "content": {"*/*": {"schema": {
                                          "type": "string", "format": "binary"}}}},
                              "401": UNAUTHORIZED,
                              "404": _error("No such attachment", ["attachment_not_found"]),
                              "503": UNAVAILABLE},
            }},
            "/api/v1/events": {"get": {
                "operationId": "streamEvents",
                "summary": "The event log as Server-Sent Events",
                "description": "Each event is `id:`, `event:` (its type) and `data:` (the "
                               "envelope `{id, type, occurred_at, desk, ticket_id, "
                               "customer_id, actor, data}`); a `:` comment every 15 s. Ids "
                               "grow and become visible in order: reconnect with the last id "
                               "seen as `Last-Event-ID` (or `?last_event_id=`) to continue "
                               "with nothing missed and nothing repeated. Without it the "
                               "stream starts at the end of the log. Types: "
                               + ", ".join(f"`{t}`" for t in EVENT_TYPES) + ".",
                "parameters": [
                    _query("types", "Comma-separated event types; `*` is a wildcard, e.g. "
                           "`ticket.*,message.created`."),
                    _query("agent", "Call events only for this agent: those whose "
                           "`data.agents` is empty or names it (other events pass)."),
                    _query("last_event_id", "Continue after this id (as the header does).",
                           {"type": "string", "pattern": "^[0-9]{1,18}$"}),
                    {"name": "Last-Event-ID", "in": "header", "required": False,
                     "description": "Continue after this id.",
                     "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}},
                ],
                "responses": {"200": {"description": "An endless event stream",
                                      "content": {"text/event-stream": {
                                          "schema": {"type": "string"}}}},
                              "400": BAD_PARAMETER, "401": UNAUTHORIZED,
                              "503": UNAVAILABLE},
            }},
            "/api/v1/customers": {"get": {
                "operationId": "findCustomers",
                "summary": "Find customers by identity",
                "parameters": [{**_query(
                    "identity", "`<kind>:<value>`, e.g. `email:li.wei@example.cn`; kind one "
                    "of " + ", ".join(get_args(IdentityKind)) + ". Repeat it (at most 20) "
                    "to look up several identities at once: the customer owning the first "
                    "one found, in the order given.",
                    {"type": "array", "items": {"type": "string"}, "minItems": 1,
                     "maxItems": 20}, required=True), "style": "form", "explode": True}],
                "responses": {"200": _ok("CustomerPage", "The customers owning the identity"),
                              "400": BAD_PARAMETER, "401": UNAUTHORIZED, "503": UNAVAILABLE},
            }},
            "/api/v1/customers/{customer_id}": {"get": {
                "operationId": "getCustomer",
                "summary": "A customer with their identities",
                "parameters": [{"name": "customer_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": _ok("CustomerView", "The customer"),
                              "401": UNAUTHORIZED,
                              "404": _error("No such customer", ["customer_not_found"]),
                              "503": UNAVAILABLE},
            }, "patch": customer_patch_operation(_ok, _error, REF, UNAUTHORIZED, UNAVAILABLE)},
            **timing_paths(_ok, _error, REF, UNAUTHORIZED, UNAVAILABLE),
            **decisions_path(_ok, BAD_PARAMETER, UNAUTHORIZED, UNAVAILABLE),
            **note_paths(_ok, _error, REF, UNAUTHORIZED, UNAVAILABLE),
            **clock_paths(_ok, _error, REF, UNAUTHORIZED, UNAVAILABLE),
            **search_path(_ok, _error, _query, BAD_PARAMETER, UNAUTHORIZED, UNAVAILABLE),
            **history_paths(_ok, _error, _query, BAD_PARAMETER, UNAUTHORIZED, UNAVAILABLE),
            **assignment_paths(_ok, _error, REF, UNAUTHORIZED, UNAVAILABLE),
            **merge_paths(_ok, _error, REF, UNAUTHORIZED, UNAVAILABLE),
            **escalation_paths(_ok, _error, REF, UNAUTHORIZED, UNAVAILABLE),
            "/api/v1/calls/{call_id}": {"get": {
                "operationId": "getCall",
                "summary": "A phone call: state, screen pop, pick and, once recorded, its "
                           "ticket and message",
                "parameters": [CALL_ID, LINE],
                "responses": {"200": CALL_OK, "400": BAD_PARAMETER, "401": UNAUTHORIZED,
                              "404": _error("No such call", ["unknown_call"]),
                              "409": _error("Several lines have this call id: add ?line=",
                                            ["ambiguous_call"]),
                              "503": UNAVAILABLE},
            }},
            "/api/v1/calls/{call_id}/pick": {"post": {
                "operationId": "pickCallTicket",
                "summary": "Choose the ticket a call's record goes to",
                "description": "`{\"ticket_id\": …}` or `{\"new_ticket\": true}`; the last "
                               "pick wins (each is kept in `history`) and is applied when the "
                               "record arrives. A picked ticket closed or merged by then "
                               "gives a new ticket.",
                "parameters": [CALL_ID, LINE],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"oneOf": [
                        {"type": "object", "required": ["ticket_id"],
                         "properties": {"ticket_id": {"type": "string"}},
                         "additionalProperties": False},
                        {"type": "object", "required": ["new_ticket"],
                         "properties": {"new_ticket": {"const": True}},
                         "additionalProperties": False}]}}}},
                "responses": {"200": CALL_OK, "400": BAD_PARAMETER, "401": UNAUTHORIZED,
                              "404": _error("No such call", ["unknown_call"]),
                              "409": _error("Ambiguous call id, or the record is applied",
                                            ["ambiguous_call", "call_recorded"]),
                              "422": _error("Not a pick, or no such ticket",
                                            ["invalid_body", "unknown_ticket"]),
                              "503": UNAVAILABLE},
            }},
            "/api/v1/openapi.json": {"get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "The OpenAPI document",
                                      "content": {"application/json": {
                                          "schema": {"type": "object"}}}}},
            }},
        },
        "components": {
            "schemas": defs["$defs"],
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }
    document["paths"].update(agent_paths(_ok, _error, REF, UNAUTHORIZED, UNAVAILABLE,
                                         BAD_PARAMETER))
    from .workflow_openapi import workflow_paths  # quick replies and reminders

    document["paths"].update(workflow_paths(_ok, _error, REF, UNAUTHORIZED, UNAVAILABLE,
                                            BAD_PARAMETER))
    from .satisfaction_api import satisfaction_paths  # an agent's 回访 rating

    document["paths"].update(satisfaction_paths(_ok, _error, REF, UNAUTHORIZED, UNAVAILABLE))
    add_scope_answers(document["paths"], _error)
    too_large = _error("The body is larger than the service takes", ["body_too_large"])
    for operations in document["paths"].values():
        for operation in operations.values():
            if "requestBody" in operation:
                operation["responses"].setdefault("413", too_large)
    return document
