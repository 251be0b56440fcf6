"""Agent-created tickets (issue 17): `POST /api/v1/tickets` for a phone call or a walk-in, the
call notes becoming the ticket's first message, and its OpenAPI operation.

The ticket is written in one write transaction of its own (not the persist path: no router
decision, no thread hints, no auto reply): the customer (by `customer_id`, or found by one of
`customer.identities` — the oldest owner, as the planner does — else created, identities nobody
owns added), the ticket on the given desk and skill group (default: the desk's
`default_skill_group`) with its category, tags and custom fields (fields.py, `required:
on_create` checked), the message (`direction: in`, channel default `api`, account default
`console`, `route` null so `GET /api/v1/decisions` never replays it), its search document and
`ticket.created` + `message.created` (actor: the caller). The creating agent is the ticket's
first contact (首问负责人: the customer reached them first); the group's strategy assigns it
like any other (the endpoint runs an assigner round before answering).

`Idempotency-Key`: the message's idempotency key is `api:<account>:<agent id or admin>:<key>`
(the persist path's unique key, so no table of its own): the same key again answers the ticket
it made, `201` with `Idempotent-Replayed: true`, whatever the body; two at once, one ticket.

SLA: no router decision plans one, so the clocks start (sla.retarget) in the same transaction on
the category's policy, else the desk's, from the call notes' time.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import Field, model_validator
from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.engine import Connection

from intake.message import Channel, IdentityKind, Priority, utcnow

from .api import PREFIX, ApiError, _answers_errors, json_response
from .assigner import Assigner
from .events import PlannedEvent
from .fields import FieldsInvalid
from .planner import normalize_identity
from .schemas import View
from .scope import Principal, current, unscoped
from .sla import retarget
from .statements import CUSTOMERS, MESSAGES, TICKET_TAGS, TICKETS, CoreWriteStatements
from .store import TicketStore, append_events
from .tags import TagsInvalid, normalize_tags, tag_rows
from .threads import TicketRef
from .timing_api import _body

MAX_KEY = 200  # characters of an Idempotency-Key header


class IdentityInput(View):
    kind: IdentityKind
    value: str = Field(min_length=1, max_length=320, pattern=r"^[^\x00]*$")


class CustomerInput(View):
    name: str | None = Field(default=None, max_length=512, pattern=r"^[^\x00]*$")
    identities: list[IdentityInput] = Field(default_factory=list, max_length=20)


class TicketCreateRequest(View):
    """`POST /api/v1/tickets`: a ticket an agent opens for a customer (a call, a walk-in)."""

    desk: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00]*$")
    skill_group: str | None = Field(default=None, max_length=128, pattern=r"^[^\x00]*$",
                                    description="default: the desk's default skill group")
    customer_id: str | None = Field(default=None, max_length=64, pattern=r"^[^\x00]*$")
    customer: CustomerInput | None = Field(default=None, description="found by an identity, "
                                           "else created; give this or `customer_id`")
    subject: str | None = Field(default=None, max_length=1000, pattern=r"^[^\x00]*$")
    text: str = Field(min_length=1, max_length=100_000, pattern=r"^[^\x00]*$",
                      description="the request as told (the call notes); not blank")
    priority: Priority = "normal"
    category: str | None = Field(default=None, max_length=128)
    tags: list[str] = Field(default_factory=list, max_length=30)
    fields: dict[str, Any] = Field(default_factory=dict, max_length=100)
    channel: Channel = "api"
    account: str = Field(default="console", min_length=1, max_length=320,
                         pattern=r"^[^\x00]*$")

    @model_validator(mode="after")
    def one_customer(self) -> TicketCreateRequest:
        if (self.customer_id is None) == (self.customer is None):
            raise ValueError("give exactly one of customer_id and customer")
        if not self.text.strip():
            raise ValueError("text must not be blank")
        return self


CREATE_BODIES = (TicketCreateRequest,)


class CreateInvalid(ValueError):
    def __init__(self, code: str, message: str, problems: dict[str, str]) -> None:
        super().__init__(message)
        self.code, self.message, self.problems = code, message, problems


def idempotency_key(account: str, principal: Principal, key: str | None) -> str:
    """The message's key: `api:<account>:<agent id or admin>:<header key or a new id>`."""
    return f"api:{account}:{principal.agent_id or 'admin'}:{key or uuid.uuid4()}"


def _customer(connection: Connection, body: TicketCreateRequest,
              now: datetime) -> tuple[str, list[str]]:
    """(customer id, ids of customers whose identities changed: their documents)."""
    statements = CoreWriteStatements(connection)
    if body.customer_id is not None:
        found = connection.execute(select(CUSTOMERS.c.id).where(
            CUSTOMERS.c.id == body.customer_id)).first()
        if found is None:
            raise CreateInvalid("invalid_body", "No such customer.",
                                {"customer_id": "no such customer"})
        return body.customer_id, []
    assert body.customer is not None
    pairs = sorted({(i.kind, normalize_identity(i.kind, i.value.strip()))
                    for i in body.customer.identities})
    known = {(kind, value): (owner, created_at) for kind, value, owner, _, created_at
             in (statements.known_identities(pairs) if pairs else [])}
    if known:
        customer_id = min(known.values(), key=lambda k: (k[1], k[0]))[0]
    else:
        customer_id = str(uuid.uuid4())
        statements.insert(CUSTOMERS, [{"id": customer_id, "name": body.customer.name,
                                       "created_at": now, "updated_at": now, "vip_level": 0,
                                       "language": None, "fields": None}])
    added = [{"customer_id": customer_id, "kind": kind, "value": value, "verified": False,
              "created_at": now} for kind, value in pairs if (kind, value) not in known]
    if added:  # agents tell identities, they do not prove them: unverified
        statements.add_identities(added)
    return customer_id, [customer_id] if added and known else []


def create_ticket(connection: Connection, body: TicketCreateRequest, key: str,
                  store: TicketStore, principal: Principal) -> tuple[str, bool]:
    """In the caller's transaction: (ticket id, whether it was created now)."""
    stored = connection.execute(select(MESSAGES.c.ticket_id).where(
        MESSAGES.c.idempotency_key == key)).first()
    if stored is not None:
        return str(stored.ticket_id), False
    config, timelines = store.tickets, store.timelines
    problems: dict[str, str] = {}
    code = "invalid_body"
    if timelines.desks is not None and body.desk not in timelines.desks:
        problems["desk"] = "not a desk of the rules in force"
    group = body.skill_group or timelines.default_group.get(body.desk)
    if body.skill_group is not None:
        gone = timelines.gone(body.desk, body.skill_group)
        if gone is not None and "desk" not in problems:
            problems["skill_group"] = gone
    if body.category is not None and config.category_ids \
            and body.category not in config.category_ids:
        code = code if problems else "unknown_category"
        problems["category"] = ("not a category of the config; one of "
                                + ", ".join(sorted(config.category_ids)))
    tags: list[str] = []
    try:
        tags = normalize_tags(body.tags)
    except TagsInvalid as exc:
        code = code if problems else "invalid_tags"
        problems.update(exc.problems)
    fields: dict[str, Any] = {}
    try:
        fields = config.ticket_field_set.merge(None, body.fields, desk=body.desk,
                                               creating=True)
    except FieldsInvalid as exc:
        code = code if problems else "invalid_fields"
        problems.update({f"fields.{k}": v for k, v in exc.problems.items()})
    if problems:
        raise CreateInvalid(code, "Some values cannot be written; `fields` says why for "
                            "each.", problems)
    now, written_at = store.clock.now(), utcnow()
    customer_id, reindexed = _customer(connection, body, written_at)
    statements = CoreWriteStatements(connection)
    number = store._allocate_numbers(statements, 1)[0]  # as the persist path numbers them
    ticket_id, message_id = str(uuid.uuid4()), str(uuid.uuid4())
    subject = (body.subject or "").strip() or body.text.strip().splitlines()[0][:200]
    statements.insert(TICKETS, [{
        "id": ticket_id, "number": number, "channel": body.channel, "account": body.account,
        "desk": body.desk, "skill_group": group, "status": "new", "priority": body.priority,
        "category": body.category, "tags": tags, "subject": subject,
        "customer_id": customer_id, "route": None, "conversation_id": None,
        "created_at": written_at, "updated_at": written_at, "satisfaction": None,
        "acknowledged_at": None, "sla": None, "escalation": None, "role": "owner",
        "customer_facing": True, "primary_ticket_id": None, "link_relation": None,
        "first_contact_agent_id": principal.agent_id, "fields": fields or None,
        "version": 1, "reopened_count": 0, "follow_up_of": None, "merged_into": None}])
    if tags:
        statements.insert(TICKET_TAGS, tag_rows(ticket_id, tags))
    name = body.customer.name if body.customer is not None else None
    identities = [{"kind": i.kind, "value": i.value.strip(), "verified": False}
                  for i in (body.customer.identities if body.customer else [])]
    statements.insert(MESSAGES, [{
        "id": message_id, "ticket_id": ticket_id, "customer_id": customer_id,
        "direction": "in", "kind": "message", "channel": body.channel,
        "account": body.account, "subject": subject, "text": body.text, "html": None,
        "flags": [], "form": None, "call": None, "event": None,
        "channel_data": {"created_by": principal.actor}, "thread": None,
        "idempotency_key": key, "message_id": None, "reference": None, "occurred_at": now,
        "received_at": now, "persisted_at": written_at, "raw": None, "trace_id": None,
        "sender_name": name, "delivery_status": None, "delivery_reason": None,
        "delivery_attempt": None, "route": None,
        "sender": {"name": name, "identities": identities}}])
    statements.index_tickets([ticket_id], reindexed)
    ref = TicketRef(id=ticket_id, number=number, status="new", customer_id=customer_id,
                    channel=body.channel, desk=body.desk)
    append_events(statements, [
        PlannedEvent("ticket.created", now, ref, customer_id, principal.actor, {
            "channel": body.channel, "account": body.account, "status": "new",
            "priority": body.priority, "subject": subject, "category": body.category,
            "conversation_id": None, "skill_group": group, "role": "owner",
            "created_by": principal.agent_id or "admin"}),
        PlannedEvent("message.created", now, ref, customer_id, principal.actor, {
            "message_id": message_id, "direction": "in", "kind": "message",
            "channel": body.channel, "account": body.account})])
    retarget(connection, ticket_id, now, timelines)  # the category's or desk's policy
    return ticket_id, True


def create_routes(store: TicketStore) -> list[web.RouteDef]:
    assigner = Assigner(store)

    @_answers_errors
    async def create(request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Idempotency-Key")
        if header is not None and (not header.strip() or len(header) > MAX_KEY
                                   or not header.isprintable()):
            raise ApiError(400, "invalid_header", "Idempotency-Key must be 1 to "
                           f"{MAX_KEY} printable characters.", {"Idempotency-Key": "invalid"})
        body = await _body(request, TicketCreateRequest)
        principal = current()
        if not principal.sees_desk(body.desk):
            raise ApiError(403, "desk_not_in_scope", f"Desk {body.desk} is not among your "
                           "desks.", {"desk": "not in your scope"})
        key = idempotency_key(body.account, principal, header.strip() if header else None)
        try:
            try:
                ticket_id, created = await store.write(
                    lambda c: create_ticket(c, body, key, store, principal))
            except sa_exc.IntegrityError:  # the same key committed by a concurrent request:
                ticket_id, created = await store.write(  # this finds its ticket
                    lambda c: create_ticket(c, body, key, store, principal))
        except CreateInvalid as exc:
            raise ApiError(422, exc.code, exc.message, exc.problems) from exc
        if created:
            await assigner.run_once()  # its group's strategy, like any other ticket
        with unscoped():  # a replay's ticket may have been moved since
            ticket = await store.get_ticket(ticket_id)
        if ticket is None:
            raise ApiError(404, "ticket_not_found", f"No ticket {ticket_id}.")
        response = json_response(ticket)
        response.set_status(201)
        response.headers["Location"] = f"{PREFIX}/tickets/{ticket_id}"
        if not created:
            response.headers["Idempotent-Replayed"] = "true"
        return response

    return [web.post(f"{PREFIX}/tickets", create)]


def create_operation(ok: Any, error: Any, ref: str, unauthorized: Any,
                     unavailable: Any) -> dict[str, Any]:
    """The OpenAPI operation `POST /api/v1/tickets` (openapi.py passes its helpers)."""
    return {
        "operationId": "createTicket",
        "summary": "Open a ticket for a customer (a call, a walk-in): the notes become its "
                   "first message",
        "description": "`channel` defaults to `api`, `account` to `console`. The ticket "
                       "waits in its skill group's queue (the desk's default group when none "
                       "is given) and is assigned by that group's strategy; no auto reply is "
                       "sent. The creating agent is its first contact. With an "
                       "`Idempotency-Key` header the same key answers the same ticket (201, "
                       "`Idempotent-Replayed: true`).",
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                        "description": "makes a retry safe: the same key, the same ticket",
                        "schema": {"type": "string", "maxLength": MAX_KEY}}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": ref.format(model="TicketCreateRequest")},
            "example": {"desk": "aftersales", "customer": {
                "name": "王芳", "identities": [{"kind": "phone", "value": "+8613800138000"}]},
                "subject": "电话：退货咨询", "text": "客户来电，订单已签收，想退货。",
                "category": "after_sales", "tags": ["phone"],
                "fields": {"order_no": "20261206-0001"}}}}},
        "responses": {"201": ok("TicketDetail", "The ticket (also for a repeated key)"),
                      "400": error("An Idempotency-Key that is not 1 to 200 printable "
                                   "characters", ["invalid_header"]),
                      "401": unauthorized,
                      "403": error("The desk is not among the caller's desks",
                                   ["desk_not_in_scope"]),
                      "422": error("The body is not valid: `fields` names each value at "
                                   "fault", ["invalid_body", "invalid_fields",
                                             "invalid_tags", "unknown_category"]),
                      "503": unavailable}}
