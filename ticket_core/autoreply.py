"""The `auto_replies` section: an acknowledgement when a message opens a ticket.

`{id, on, channels, accounts, desks, subject, text, max_per_recipient, recipient_window}`.
`on: ticket_created` answers every new ticket; `on: outside_business_hours` only one opened
while its desk's calendar is closed (list it first: the first matching entry wins, once per
ticket; its outbound idempotency key is `auto_reply:<entry id>:<ticket id>`). None for a
message flagged `auto_reply`, `bounce`, `bulk`, `loop`, `parse_error` or `spam_suspect`. It goes
to the sender identity of the opening message alone (never to the other addresses of a
reply-all), with `thread.in_reply_to` its Message-ID and `thread.references` its References
plus that ID.

Placeholders are the kernel's (intake/placeholders.py, one pass, `| default:` fallbacks):
`ticket.number`, `ticket.subject`, `ticket.fields.<key>`, `customer.name`,
`customer.fields.<key>`, `agent.name` (the assignee, when one is set already). One with neither
a value nor a default sends nothing for that ticket (logged `auto_reply_unresolved` with the
names): never "您好 " with a hole in it; give a default to always send.

At most `max_per_recipient` (default 3) auto replies reach one customer within
`recipient_window` (default 10 minutes), across tickets: a mail loop or a customer opening
ticket after ticket gets no more (logged `auto_reply_rate_limited`). Counted per customer,
the owner of the recipient identity, from the stored outgoing `auto_reply` messages.

Written in its own transaction right after the batch's commit: a crash between the two leaves
that ticket without its acknowledgement (the redelivered message is a duplicate and opens no
ticket).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from intake.config import ConfigDocument, validate
from intake.durations import Duration
from intake.errors import ConfigInvalid
from intake.logging import get_logger
from intake.message import Identity, Message, OutboundMessage, Thread
from intake.placeholders import Unresolved, problems
from intake.placeholders import render as render_placeholders

from .agents_db import AGENTS
from .events import PlannedEvent
from .planner import TicketRef
from .replies import REACHES
from .statements import CUSTOMERS, MESSAGES, OUTBOX, TICKETS, CoreWriteStatements
from .store import append_events

log = get_logger(component="auto_replies")

NO_ACKNOWLEDGEMENT = frozenset({"auto_reply", "bounce", "bulk", "loop", "parse_error",
                                "spam_suspect"})


class AutoReply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    on: Literal["ticket_created", "outside_business_hours"] = "ticket_created"
    channels: list[str] = Field(default_factory=list)  # empty: any
    accounts: list[str] = Field(default_factory=list)
    desks: list[str] = Field(default_factory=list)
    subject: str = Field(min_length=1, max_length=998)
    text: str = Field(min_length=1)
    max_per_recipient: int | None = Field(default=3, ge=1)  # null: no limit
    recipient_window: Duration = timedelta(minutes=10)

    def matches(self, message: Message, desk: str | None, closed: bool = False) -> bool:
        return ((self.on != "outside_business_hours" or closed)
                and (not self.channels or message.channel in self.channels)
                and (not self.accounts or message.account in self.accounts)
                and (not self.desks or desk in self.desks))


class AutoReplies(RootModel[list[AutoReply]]):
    def choose(self, message: Message, desk: str | None,
               closed: bool = False) -> AutoReply | None:
        """The first entry for this opening message; `closed`: its desk's calendar is."""
        if message.kind == "event" or NO_ACKNOWLEDGEMENT.intersection(message.flags):
            return None
        return next((rule for rule in self.root if rule.matches(message, desk, closed)), None)


def load_auto_replies(doc: ConfigDocument) -> AutoReplies:
    """The validated section; a placeholder naming no known variable (or `input.…`,
    `satisfaction.url`: nobody to ask, no rating yet) is a ConfigInvalid with its line."""
    section = doc.section("auto_replies")
    replies = validate(doc, AutoReplies, section if section is not None else [],
                       prefix=("auto_replies",))
    found: list[str] = []
    for i, rule in enumerate(replies.root):
        for key in ("subject", "text"):
            for message in problems(getattr(rule, key),
                                    unavailable=("input.", "satisfaction.url")):
                found.append(f"{doc.where(('auto_replies', i, key))}: "
                             f"auto_replies.{i}.{key}: {message}")
    if found:
        raise ConfigInvalid(found)
    return replies


def render(template: str, number: Any, subject: str | None,
           values: dict[str, object | None] | None = None) -> str:
    """The kernel's one-pass render with the ticket's values; raises `Unresolved`."""
    return render_placeholders(template, {"ticket.number": number, "ticket.subject": subject,
                                          **(values or {})})


def _values(connection: Connection, ticket: Any) -> dict[str, object | None]:
    customer = connection.execute(select(CUSTOMERS.c.name, CUSTOMERS.c.fields).where(
        CUSTOMERS.c.id == ticket.customer_id)).first()
    values: dict[str, object | None] = {"customer.name": customer.name if customer else None}
    assignee = ticket._mapping.get("assignee_id")  # the assignment branch's column
    if assignee is not None:
        values["agent.name"] = connection.execute(select(AGENTS.c.name).where(
            AGENTS.c.id == assignee)).scalar()
    for prefix, fields in (("ticket.fields.", ticket.fields),
                           ("customer.fields.", customer.fields if customer else None)):
        for key, value in (fields or {}).items():
            values[prefix + key] = ("、".join(map(str, value)) or None
                                    if isinstance(value, list) else value)
    return values


def rate_limited(connection: Connection, rule: AutoReply, customer_id: str,
                 now: datetime) -> bool:
    """Whether this customer had `max_per_recipient` auto replies within the window."""
    if rule.max_per_recipient is None:
        return False
    sent = connection.execute(select(func.count()).select_from(MESSAGES).where(
        MESSAGES.c.customer_id == customer_id, MESSAGES.c.direction == "out",
        MESSAGES.c.kind == "auto_reply",
        MESSAGES.c.persisted_at > now - rule.recipient_window)).scalar_one()
    return int(sent) >= rule.max_per_recipient


def recipient(message: Message) -> Identity | None:
    """The opening message's own sender identity its channel can answer."""
    kinds = REACHES.get(message.channel, ())
    return next((Identity(kind=i.kind, value=i.value, verified=i.verified)
                 for i in message.sender.identities if i.kind in kinds), None)


def write_acknowledgement(connection: Connection, rule: AutoReply, message: Message,
                          ticket_id: str, now: datetime) -> str | None:
    """The acknowledgement's row, outbox row and event; None when there is nothing to send."""
    to = recipient(message)
    if to is None:
        return None
    key = f"auto_reply:{rule.id}:{ticket_id}"
    if connection.execute(select(MESSAGES.c.id).where(
            MESSAGES.c.idempotency_key == key)).first() is not None:
        return None
    ticket = connection.execute(select(TICKETS).where(TICKETS.c.id == ticket_id)).first()
    if ticket is None:
        return None
    if rate_limited(connection, rule, ticket.customer_id, now):
        log.info("auto_reply_rate_limited", ticket_id=ticket.id, rule=rule.id,
                 max_per_recipient=rule.max_per_recipient)
        return None
    values = _values(connection, ticket)
    try:
        subject = render(rule.subject, ticket.number, ticket.subject, values)
        text = render(rule.text, ticket.number, ticket.subject, values)
    except Unresolved as exc:  # never a hole: nothing is sent, and the log says why
        log.warning("auto_reply_unresolved", ticket_id=ticket.id, rule=rule.id,
                    placeholders=exc.names)
        return None
    thread = message.thread
    opening_id = thread.message_id if thread else None
    references: Sequence[str] = [*(thread.references if thread else []),
                                 *([opening_id] if opening_id else [])]
    message_id = uuid.uuid4()
    outbound = OutboundMessage(
        id=message_id, idempotency_key=key, ticket_id=ticket.id,
        ticket_number=str(ticket.number), channel=message.channel, account=message.account,
        to=to, kind="auto_reply", subject=subject, text=text,
        thread=Thread(in_reply_to=opening_id, references=list(references),
                      ticket_number=str(ticket.number), ticket_id=ticket.id),
        created_at=now)
    statements = CoreWriteStatements(connection)
    statements.insert(MESSAGES, [{
        "id": str(message_id), "ticket_id": ticket.id, "customer_id": ticket.customer_id,
        "direction": "out", "kind": "auto_reply", "channel": message.channel,
        "account": message.account, "subject": subject, "text": text, "html": None,
        "flags": [], "form": None, "call": None, "event": None,
        "channel_data": {"to": to.model_dump(mode="json"), "auto_reply": rule.id},
        "thread": None, "idempotency_key": key, "message_id": None, "reference": None,
        "occurred_at": now, "received_at": now, "persisted_at": now, "raw": None,
        "trace_id": message.trace_id, "sender_name": None, "delivery_status": "pending",
        "delivery_reason": None, "delivery_attempt": None}])
    statements.insert(OUTBOX, [{
        "message_id": str(message_id), "routing_key": f"{message.channel}.{message.account}",
        "body": outbound.model_dump_json(), "created_at": now, "published_at": None}])
    connection.execute(update(TICKETS).where(TICKETS.c.id == ticket.id).values(
        updated_at=now, version=TICKETS.c.version + 1))
    ref = TicketRef(id=ticket.id, number=ticket.number, status=ticket.status,
                    customer_id=ticket.customer_id, channel=ticket.channel, desk=ticket.desk)
    append_events(statements, [PlannedEvent(
        "message.created", now, ref, ticket.customer_id, "system",
        {"message_id": str(message_id), "direction": "out", "kind": "auto_reply",
         "channel": message.channel, "account": message.account},
        by="system:auto_replies", trace_id=message.trace_id)])
    return str(message_id)
