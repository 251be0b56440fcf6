"""The `auto_replies` section: an acknowledgement when a message opens a ticket.

`{id, on: ticket_created, channels, accounts, desks, subject, text}`, with `{{ticket.number}}`
and `{{ticket.subject}}` in subject and text. The first matching entry wins, once per ticket
(its outbound idempotency key is `auto_reply:<entry id>:<ticket id>`); none for a message
flagged `auto_reply`, `bounce`, `bulk`, `loop`, `parse_error` or `spam_suspect`. It goes to the
sender identity of the opening message alone (never to the other addresses of a reply-all),
with `thread.in_reply_to` its Message-ID and `thread.references` its References plus that ID.

Written in its own transaction right after the batch's commit: a crash between the two leaves
that ticket without its acknowledgement (the redelivered message is a duplicate and opens no
ticket). The agent workflow issue extends this section.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel
from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from intake.config import ConfigDocument, validate
from intake.message import Identity, Message, OutboundMessage, Thread

from .events import PlannedEvent
from .planner import TicketRef
from .replies import REACHES
from .statements import MESSAGES, OUTBOX, TICKETS, CoreWriteStatements
from .store import append_events

NO_ACKNOWLEDGEMENT = frozenset({"auto_reply", "bounce", "bulk", "loop", "parse_error",
                                "spam_suspect"})


class AutoReply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    on: Literal["ticket_created"] = "ticket_created"
    channels: list[str] = Field(default_factory=list)  # empty: any
    accounts: list[str] = Field(default_factory=list)
    desks: list[str] = Field(default_factory=list)
    subject: str = Field(min_length=1, max_length=998)
    text: str = Field(min_length=1)

    def matches(self, message: Message, desk: str | None) -> bool:
        return ((not self.channels or message.channel in self.channels)
                and (not self.accounts or message.account in self.accounts)
                and (not self.desks or desk in self.desks))


class AutoReplies(RootModel[list[AutoReply]]):
    def choose(self, message: Message, desk: str | None) -> AutoReply | None:
        if message.kind == "event" or NO_ACKNOWLEDGEMENT.intersection(message.flags):
            return None
        return next((rule for rule in self.root if rule.matches(message, desk)), None)


def load_auto_replies(doc: ConfigDocument) -> AutoReplies:
    section = doc.section("auto_replies")
    return validate(doc, AutoReplies, section if section is not None else [],
                    prefix=("auto_replies",))


def render(template: str, number: Any, subject: str | None) -> str:
    text = template
    for name, value in (("ticket.number", str(number)), ("ticket.subject", subject or "")):
        text = text.replace("{{" + name + "}}", value).replace("{{ " + name + " }}", value)
    return text


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
    subject = render(rule.subject, ticket.number, ticket.subject)
    text = render(rule.text, ticket.number, ticket.subject)
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
         "channel": message.channel, "account": message.account})])
    return str(message_id)
