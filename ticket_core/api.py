"""The agent API under /api/v1: tickets, replies, customers, attachments, events, the OpenAPI
document; bearer-token auth.

Every answer under /api/v1 is JSON, errors included: `{"error", "message", "fields"}` with a
stable snake_case `error`. `auth_middleware` checks the token and turns aiohttp's own 404/405
for unknown paths into that shape; handlers raise `ApiError`.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, get_args

import orjson
import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import BaseModel, ValidationError

from intake.blobs import BlobStore
from intake.errors import StorageUnavailable
from intake.http import error_response as http_error_response
from intake.logging import get_logger
from intake.message import Channel, IdentityKind, Priority, utcnow

from .assigning import assignment_filters, replied
from .attachments import attachment_handler
from .history import request_trace_id
from .lifecycle import etag
from .links import NotCustomerFacing
from .openapi import build_openapi
from .queries import TicketReader
from .replies import AttachmentUnknown, NoReplyChannel, ReplyChannels, TicketNotFound, write_reply
from .schemas import STATUSES, CustomerPage, ReplyRequest, TicketPage
from .scope import (
    ROUTE_ROLES,
    SYSTEM,
    DeskNotInScope,
    Principal,
    RoleRequired,
    acting_as,
    current,
)
from .sse import events_handler
from .store import MAX_LIMIT, CursorInvalid, TicketFilter, TicketStore
from .tags import normalize_tag
from .ticket_order import SLA_STATES, SORTS

PREFIX = "/api/v1"
OPENAPI_PATH = f"{PREFIX}/openapi.json"

CHANNELS = frozenset(get_args(Channel))
PRIORITIES = frozenset(get_args(Priority))
IDENTITY_KINDS = frozenset(get_args(IdentityKind))
TICKET_FILTERS = ("channel", "account", "desk", "skill_group", "status", "customer_id",
                  "priority", "category", "idempotency_key", "reference", "tag",
                  "assignee", "first_contact", "reminder", "sla", "sort")
TICKET_PARAMS = frozenset((*TICKET_FILTERS, "limit", "cursor"))
MAX_IDENTITIES = 20  # `GET /api/v1/customers?identity=…` repeated

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = get_logger(component="agent_api")


class ApiError(Exception):
    """An error answer: HTTP status, stable code, a sentence for people, the fields at fault."""

    def __init__(self, status: int, code: str, message: str,
                 fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}


def error_response(status: int, code: str, message: str, fields: dict[str, str] | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    """The one JSON error shape (intake.http): `{"error", "message", "fields"}`."""
    return http_error_response(status, code, message, fields, headers)


async def _reply_request(request: web.Request) -> ReplyRequest:
    """The body of `POST …/replies`, or a 422 naming the fields at fault."""
    try:
        body = orjson.loads(await request.read())
        reply = ReplyRequest.model_validate(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, "invalid_body", "The body is not JSON.", {"body": str(exc)}) from exc
    except ValidationError as exc:
        fields = {".".join(str(p) for p in e["loc"]) or "body": e["msg"] for e in exc.errors()}
        raise ApiError(422, "invalid_body", "Some fields are not valid.", fields) from exc
    if not reply.text.strip():
        raise ApiError(422, "invalid_body", "A reply needs a text.", {"text": "must not be empty"})
    if "\x00" in reply.text:  # PostgreSQL's text cannot hold it; no channel sends it
        raise ApiError(422, "invalid_body", "The text holds a NUL character.",
                       {"text": "must not contain NUL (U+0000)"})
    return reply


def json_response(model: BaseModel | dict[str, Any]) -> web.Response:
    body = (model.model_dump_json().encode() if isinstance(model, BaseModel)
            else orjson.dumps(model))
    return web.Response(body=body, content_type="application/json")


def _answers_errors(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.fields)
        except StorageUnavailable as exc:
            log.warning("storage_unavailable", path=request.path, error=str(exc))
            return error_response(503, "storage_unavailable",
                                  "The ticket database is not reachable; try again shortly.",
                                  headers={"Retry-After": "2"})
    return wrapped


def page_limit(value: str | None, default: int, maximum: int,
               problems: dict[str, str]) -> int:
    """A page's `limit` parameter: `default` when absent; a problem when not 1 to `maximum`."""
    if value is None:
        return default
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        problems["limit"] = f"an integer from 1 to {maximum}"
    return limit


def _ticket_query(query: Any) -> tuple[TicketFilter, int, str | None]:
    """Validate `GET /api/v1/tickets` parameters; an empty value counts as absent."""
    problems: dict[str, str] = {}
    for name in query:
        if name not in TICKET_PARAMS:
            problems[name] = "unknown parameter; known: " + ", ".join(sorted(TICKET_PARAMS))
        elif len(query.getall(name)) > 1:
            problems[name] = "given more than once"
    values = {name: (query.get(name) or "").strip() or None for name in TICKET_PARAMS}

    if values["channel"] is not None and values["channel"] not in CHANNELS:
        problems["channel"] = "one of " + ", ".join(sorted(CHANNELS))
    if values["priority"] is not None and values["priority"] not in PRIORITIES:
        problems["priority"] = "one of " + ", ".join(sorted(PRIORITIES))
    statuses: tuple[str, ...] = ()
    if values["status"] is not None:
        statuses = tuple(s.strip() for s in values["status"].split(",") if s.strip())
        unknown = [s for s in statuses if s not in STATUSES]
        if unknown or not statuses:
            problems["status"] = ("one or more (comma-separated) of " + ", ".join(STATUSES)
                                  + "; `open` means not resolved, closed or merged")
    if values["tag"] is not None:
        try:
            values["tag"] = normalize_tag(values["tag"])
        except ValueError as exc:
            problems["tag"] = str(exc)
    if values["reminder"] not in (None, "due"):
        problems["reminder"] = "due: tickets with a due reminder of yours"
    if values["sla"] not in (None, *SLA_STATES):
        problems["sla"] = "one of " + ", ".join(SLA_STATES)
    if values["sort"] not in (None, *SORTS):
        problems["sort"] = "one of " + ", ".join(SORTS)
    limit = page_limit(values["limit"], 50, MAX_LIMIT, problems)
    assignment_filters(values, problems)  # `assignee`, `first_contact` (assigning.py)
    if problems:
        raise ApiError(400, "invalid_parameter", "Some query parameters are not valid.",
                       problems)
    plain = {name: values[name] for name in TICKET_FILTERS if name != "status"}
    return TicketFilter(status=statuses, **plain), limit, values["cursor"]


def api_routes(store: TicketStore, *, blobs: BlobStore | None = None,
               reply_channels: ReplyChannels | None = None) -> list[web.RouteDef]:
    """The routes of the agent API; mount with `auth_middleware(token)` on the app.

    `blobs` serves attachments (none without it); `reply_channels` are the channels that can
    send a reply (none: every reply is `422 no_reply_channel`).
    """
    from .agents_api import agent_routes
    from .assignment_api import assignment_routes
    from .calls_api import call_routes  # it builds on this module's errors and answers
    from .clock_api import clock_routes
    from .decisions import decision_routes
    from .escalations_api import escalation_routes
    from .history_api import history_routes
    from .merge_api import merge_routes
    from .notes import note_routes
    from .quick_replies import quick_reply_routes
    from .reminders import reminder_routes
    from .satisfaction_api import satisfaction_routes
    from .search_api import search_routes
    from .ticket_create import create_routes
    from .ticket_patch import patch_routes
    from .timing_api import timing_routes

    openapi_body = orjson.dumps(build_openapi())
    channels = reply_channels or ReplyChannels()

    @_answers_errors
    async def post_reply(request: web.Request) -> web.StreamResponse:
        ticket_ref = request.match_info["ticket_id"]
        if not ticket_ref.isascii() or len(ticket_ref) > 64:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_ref}.")
        reply = await _reply_request(request)
        principal = current()  # the writer's thread does not see the request's context
        try:
            message_id = await store.write(lambda c: replied(c, write_reply(
                c, ticket_ref, reply.text, reply.attachments, channels, utcnow(),
                timelines=store.timelines, domain_now=store.clock.now()), principal.agent_id,
                store.clock.now(), store.timelines, principal.actor))
            store.outbox_pending = True
        except TicketNotFound as exc:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_ref}.") from exc
        except NotCustomerFacing as exc:
            raise ApiError(409, "not_customer_facing",
                           "This ticket is internal (a copy or collaborator ticket linked to "
                           f"ticket {exc}): a reply would reach the customer. Reply on the "
                           "customer-facing ticket.", {"ticket_id": f"reply on {exc}"}) from exc
        except NoReplyChannel as exc:
            raise ApiError(422, "no_reply_channel",
                           "No channel can reach this customer: the ticket's channel cannot "
                           "reply and no other configured channel reaches one of the "
                           "customer's identities.", {"channel": "cannot reply"}) from exc
        except AttachmentUnknown as exc:
            raise ApiError(422, "invalid_body", "An attachment is not a stored blob.",
                           {"attachments": f"unknown blob reference {exc}"}) from exc
        stored = await store.get_message(message_id)
        assert stored is not None
        response = json_response(stored)
        response.set_status(201)
        response.headers["Location"] = f"{PREFIX}/tickets/{stored.ticket_id}"
        return response

    @_answers_errors
    async def list_tickets(request: web.Request) -> web.StreamResponse:
        filters, limit, cursor = _ticket_query(request.query)
        try:
            page = await store.list_tickets(filters, limit=limit, cursor=cursor)
        except CursorInvalid as exc:
            raise ApiError(400, "invalid_parameter", "The cursor is not valid.",
                           {"cursor": "use the `next` value of a previous page"}) from exc
        return json_response(TicketPage(items=page.items, next=page.next))

    @_answers_errors
    async def get_ticket(request: web.Request) -> web.StreamResponse:
        ticket_id = request.match_info["ticket_id"]
        # Ids and numbers are ASCII; `str.isdigit` also holds for '¹' or '①', which int()
        # refuses (found by schemathesis: a 500).
        ticket = await store.get_ticket(ticket_id) if ticket_id.isascii() else None
        if ticket is None:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_id}.")
        response = json_response(ticket)
        response.headers["ETag"] = etag(ticket.version)
        return response

    @_answers_errors
    async def get_customer(request: web.Request) -> web.StreamResponse:
        customer_id = request.match_info["customer_id"]
        customer = await store.get_customer(customer_id)
        if customer is None:
            raise ApiError(404, "customer_not_found", f"No customer {customer_id}.")
        return json_response(customer)

    @_answers_errors
    async def find_customers(request: web.Request) -> web.StreamResponse:
        # `identity` may repeat (the router looks up all of a sender's identities in one
        # call): the customer owning the first one found, in the order given.
        unknown = {name: "unknown parameter; known: identity"
                   for name in request.query if name != "identity"}
        given = [i.strip() for i in request.query.getall("identity", [])]
        pairs: list[tuple[str, str]] = []
        for identity in given:
            kind, _, value = identity.partition(":")
            if kind not in IDENTITY_KINDS or not value:
                unknown["identity"] = ("<kind>:<value> with kind one of "
                                       + ", ".join(sorted(IDENTITY_KINDS)))
            pairs.append((kind, value))
        if not given or not any(given):
            unknown["identity"] = "required, as <kind>:<value>, e.g. email:li.wei@example.cn"
        elif len(given) > MAX_IDENTITIES:
            unknown["identity"] = f"at most {MAX_IDENTITIES}"
        if unknown:
            raise ApiError(400, "invalid_parameter", "Some query parameters are not valid.",
                           unknown)
        customers = await store.find_first_customer(pairs)
        return json_response(CustomerPage(items=customers, next=None))

    async def openapi(request: web.Request) -> web.StreamResponse:
        return web.Response(body=openapi_body, content_type="application/json")

    return [
        web.get(f"{PREFIX}/tickets", list_tickets),
        web.get(f"{PREFIX}/tickets/{{ticket_id}}", get_ticket),
        web.post(f"{PREFIX}/tickets/{{ticket_id}}/replies", post_reply),
        attachment_handler(store, blobs),
        events_handler(store),
        web.get(f"{PREFIX}/customers", find_customers),
        web.get(f"{PREFIX}/customers/{{customer_id}}", get_customer),
        web.get(OPENAPI_PATH, openapi),
        *call_routes(store),
        *timing_routes(store),
        *escalation_routes(store),
        *create_routes(store),
        *decision_routes(store),
        *patch_routes(store),
        *agent_routes(store),
        *note_routes(store),
        *history_routes(store),
        *clock_routes(store),
        *search_routes(store),
        *assignment_routes(store),
        *quick_reply_routes(store),
        *reminder_routes(store),
        *merge_routes(store),
        *satisfaction_routes(store),
    ]


def ready_check(store: TicketStore) -> Callable[[web.Application], Awaitable[str | None]]:
    """A `Service` ready check: None when the database answers, else the reason."""

    async def database_ready(app: web.Application) -> str | None:
        try:
            await store.ping()
        except StorageUnavailable as exc:
            return f"database: {exc}"
        return None

    return database_ready


def _bearer(request: web.Request) -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


def auth_middleware(token: str, store: TicketReader | None = None) -> Middleware:
    """Bearer-token auth for /api/v1 (except the OpenAPI document) and JSON 404/405 there.

    The admin token (`token`, INTAKE_API_TOKEN) works every desk; with a `store`, agents'
    tokens (tokens.py) work too, each as its agent's role and desks. The request's `Principal`
    is set for the query layer (scope.py), which narrows every read to it; here, before any
    handler runs: an explicit `?desk=` outside the caller's desks is `403 desk_not_in_scope`,
    a route's required role is checked (`403 forbidden`), and a ticket route
    (`…/tickets/{ticket_id}…`) for a ticket out of scope is `404 ticket_not_found`, or, for
    its first-contact agent, read-only (`403 read_only_access` except GET and notes).
    An empty `token` refuses the admin token: the API never runs open by accident.
    """
    from .tokens import PREFIX as TOKEN_PREFIX  # tokens.py builds on the reader
    from .tokens import registry_for

    expected = token.encode()
    registry = registry_for(store) if store is not None else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            return await handler(request)
        principal: Principal | None = SYSTEM
        if path != OPENAPI_PATH:
            given = _bearer(request)
            # aiohttp decodes header bytes that are not UTF-8 as surrogates: encode them back
            # the same way rather than fail (a 500) on a stranger's garbage.
            principal = None
            if given is not None and expected and hmac.compare_digest(
                    given.encode("utf-8", "surrogateescape"), expected):
                principal = SYSTEM
            elif given is not None and registry is not None and given.startswith(TOKEN_PREFIX):
                principal = await registry.principal(given)
            if principal is None:
                return error_response(
                    401, "unauthorized",
                    "Send `Authorization: Bearer <token>` with the agent API token.",
                    headers={"WWW-Authenticate": 'Bearer realm="intake"'})
        # The request's trace (its log lines, the history rows its writes make: history.py).
        trace_id = request_trace_id(request.headers.get("X-Trace-Id"))
        structlog.contextvars.bind_contextvars(trace_id=trace_id)
        with acting_as(principal):
            response = await _answer(request, handler, principal, store)
        if not response.prepared:  # a stream (SSE) has sent its headers already
            response.headers["X-Trace-Id"] = trace_id
        return response

    return middleware


async def guard_request(request: web.Request, principal: Principal,
                        store: TicketReader | None) -> web.Response | None:
    """The scope and role checks every route gets before its handler (see auth_middleware)."""
    desk = request.query.get("desk")
    if desk and not principal.sees_desk(desk.strip()):
        return error_response(403, "desk_not_in_scope",
                              f"Desk {desk.strip()} is not among your desks.",
                              {"desk": "not in your scope"})
    route = request.match_info.route
    resource = route.resource.canonical if route.resource is not None else None
    needed = ROUTE_ROLES.get((request.method, resource or ""))
    ticket_ref = request.match_info.get("ticket_id")
    if ticket_ref is not None and principal.desks is not None and store is not None:
        found = await store.ticket_access(ticket_ref)
        if found is None:
            return error_response(404, "ticket_not_found", f"No ticket {ticket_ref}.")
        if found[1] == "read" and request.method not in ("GET", "HEAD") \
                and not request.path.rstrip("/").endswith("/notes"):
            return error_response(403, "read_only_access",
                                  "You are this ticket's first-contact agent: you may read it "
                                  "and add internal notes; it is no longer on your desks.")
    # After the ticket's scope: a ticket out of scope is 404 whatever the role (never 403).
    if needed is not None and not principal.has_role(needed):
        return error_response(403, "forbidden", f"{request.method} {resource} requires role "
                              f"{needed}.", {"role": f"requires {needed}"})
    return None


async def _answer(request: web.Request, handler: Handler, principal: Principal,
                  store: TicketReader | None) -> web.StreamResponse:
    path = request.path
    try:
        refused = await guard_request(request, principal, store)
        return refused if refused is not None else await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        return error_response(405, "method_not_allowed", f"{request.method} is not allowed "
                              f"on {path}.", headers={"Allow": ", ".join(
                                  sorted(exc.allowed_methods))})
    except web.HTTPNotFound:
        return error_response(404, "not_found", f"No such endpoint: {path}.")
    except web.HTTPRequestEntityTooLarge as exc:  # aiohttp's client_max_size, read by a handler
        return error_response(413, "body_too_large", f"The body is too large: {exc.text}",
                              {"body": "too large"})
    except StorageUnavailable:
        return error_response(503, "storage_unavailable",
                              "The ticket database is not reachable; try again shortly.",
                              headers={"Retry-After": "2"})
    except RoleRequired as exc:
        return error_response(403, "forbidden", f"{exc}.", {"role": f"requires {exc.role}"})
    except DeskNotInScope as exc:
        return error_response(403, "desk_not_in_scope",
                              f"Desk {exc.desk} is not among your desks.",
                              {"desk": "not in your scope"})
