"""Agent replies: choose the channel, store the outgoing message and its outbox row together.

Which channel and account: the ticket's own (those of its first inbound message) when that
channel can reply and the customer has an identity it reaches; else another channel that can
reply and reaches one of the customer's identities, with the account the customer last wrote to
on it (or the channel's first configured account); else `NoReplyChannel`. Which channels can
reply is a setting (`INTAKE_TICKET_CORE_REPLY_CHANNELS`): the ticket core imports no connector
(`intake run ticket-core` must not depend on a connector's code), and a channel replies only
once its connector runs a sender. The web form never replies.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Connection

from intake.config import ConfigDocument
from intake.message import Attachment, Identity, OutboundMessage, Thread

from .events import PlannedEvent
from .lifecycle import set_status
from .links import NotCustomerFacing
from .planner import TicketRef
from .statements import ATTACHMENTS, IDENTITIES, MESSAGES, OUTBOX, TICKETS, CoreWriteStatements
from .store import append_events
from .timeline import reply_sent
from .timers import Timelines

# The identity kinds each channel can send to.
REACHES: dict[str, tuple[str, ...]] = {
    "email": ("email",),
    "wechat": ("wechat_openid", "wecom_userid", "wechat_unionid"),
    "sdk": ("sdk_user", "sdk_device"),
    "telephony": ("phone",),
    "api": ("api_user",),
}
NEVER_REPLIES = frozenset({"webform"})


class TicketNotFound(LookupError):
    pass


class NoReplyChannel(LookupError):
    pass


class AttachmentUnknown(LookupError):
    """A blob reference no stored message carries (only those may go out)."""


@dataclass(frozen=True, slots=True)
class ReplyChannels:
    """The channels that can reply, and a default account per channel (from the config)."""

    channels: frozenset[str] = frozenset()
    accounts: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, names: str, accounts: Mapping[str, str] | None = None) -> ReplyChannels:
        chosen = {n.strip() for n in names.split(",") if n.strip()} - NEVER_REPLIES
        unknown = chosen - set(REACHES)
        if unknown:
            raise ValueError(f"INTAKE_TICKET_CORE_REPLY_CHANNELS: unknown channel(s) "
                             f"{', '.join(sorted(unknown))}; known: {', '.join(sorted(REACHES))}")
        return cls(frozenset(chosen), dict(accounts or {}))


def write_reply(connection: Connection, ticket_ref: str, text: str,
                attachment_refs: Sequence[str], channels: ReplyChannels,
                now: datetime, *, timelines: Timelines | None = None,
                domain_now: datetime | None = None) -> str:
    """Store the reply, its outbox row and its event in the caller's transaction; its id.

    With `timelines`, the reply is also the first-response signal (timeline.reply_sent) in
    the same transaction, as of `domain_now` (the store's clock; default `now`)."""
    ticket = _ticket(connection, ticket_ref)
    if ticket is None:
        raise TicketNotFound(ticket_ref)
    if not ticket.customer_facing:  # a linked internal ticket: its reply would reach them
        raise NotCustomerFacing(ticket.primary_ticket_id)
    channel, account, to = choose_channel(connection, ticket, channels)
    attachments = [_attachment(connection, ref) for ref in attachment_refs]
    replied_to = connection.execute(
        select(MESSAGES.c.message_id).where(
            MESSAGES.c.ticket_id == ticket.id, MESSAGES.c.direction == "in",
            MESSAGES.c.message_id.is_not(None))
        .order_by(MESSAGES.c.persisted_at.desc()).limit(1)).scalar()

    message_id = uuid.uuid4()
    outbound = OutboundMessage(
        id=message_id, idempotency_key=f"reply:{message_id}", ticket_id=ticket.id,
        ticket_number=str(ticket.number), channel=channel, account=account, to=to,
        kind="reply", subject=ticket.subject, text=text, attachments=attachments,
        thread=Thread(in_reply_to=replied_to, conversation_id=ticket.conversation_id,
                      ticket_number=str(ticket.number), ticket_id=ticket.id),
        created_at=now)
    statements = CoreWriteStatements(connection)
    statements.insert(MESSAGES, [{
        "id": str(message_id), "ticket_id": ticket.id, "customer_id": ticket.customer_id,
        "direction": "out", "kind": "reply", "channel": channel, "account": account,
        "subject": ticket.subject, "text": text, "html": None, "flags": [], "form": None,
        "call": None, "event": None, "channel_data": {"to": to.model_dump(mode="json")},
        "thread": None, "idempotency_key": outbound.idempotency_key, "message_id": None,
        "reference": None, "occurred_at": now, "received_at": now, "persisted_at": now,
        "raw": None, "trace_id": None, "sender_name": None,
        "delivery_status": "pending", "delivery_reason": None, "delivery_attempt": None}])
    if attachments:
        statements.insert(ATTACHMENTS, [{
            "message_id": str(message_id), **a.model_dump(mode="json")} for a in attachments])
    statements.insert(OUTBOX, [{
        "message_id": str(message_id), "routing_key": f"{channel}.{account}",
        "body": outbound.model_dump_json(), "created_at": now, "published_at": None}])
    connection.execute(update(TICKETS).where(TICKETS.c.id == ticket.id).values(
        updated_at=now, version=TICKETS.c.version + 1))
    events: list[PlannedEvent] = []
    if ticket.status == "new":  # issue 17: a new ticket replied to is open (lifecycle.py)
        events, _ = set_status(connection, ticket, "open", domain_now or now, "agent",
                               (timelines or Timelines()).lifecycle)
    statements.index_tickets([ticket.id], [])  # the reply's text is searchable
    ref = TicketRef(id=ticket.id, number=ticket.number, status=ticket.status,
                    customer_id=ticket.customer_id, channel=ticket.channel, desk=ticket.desk)
    append_events(statements, [*events, PlannedEvent(
        "message.created", now, ref, ticket.customer_id, "agent",
        {"message_id": str(message_id), "direction": "out", "kind": "reply",
         "channel": channel, "account": account})])
    if timelines is not None:
        reply_sent(connection, ticket.id, domain_now or now, timelines)
    return str(message_id)


def choose_channel(connection: Connection, ticket: Any,
                   channels: ReplyChannels) -> tuple[str, str, Identity]:
    """(channel, account, identity to send to) for a reply on `ticket`; see the docstring."""
    identities = connection.execute(
        select(IDENTITIES.c.kind, IDENTITIES.c.value, IDENTITIES.c.verified)
        .where(IDENTITIES.c.customer_id == ticket.customer_id)
        .order_by(IDENTITIES.c.verified.desc(), IDENTITIES.c.id)).all()

    def reach(channel: str) -> Identity | None:
        for kind in REACHES.get(channel, ()):
            for identity in identities:
                if identity.kind == kind:
                    return Identity(kind=kind, value=identity.value, verified=identity.verified)
        return None

    if ticket.channel in channels.channels and (to := reach(ticket.channel)) is not None:
        return ticket.channel, ticket.account, to
    for channel in sorted(channels.channels - {ticket.channel}):
        to = reach(channel)
        if to is None:
            continue
        account = connection.execute(
            select(MESSAGES.c.account).where(
                MESSAGES.c.customer_id == ticket.customer_id, MESSAGES.c.channel == channel,
                MESSAGES.c.direction == "in")
            .order_by(MESSAGES.c.persisted_at.desc()).limit(1)).scalar()
        account = account or channels.accounts.get(channel)
        if account:
            return channel, account, to
    raise NoReplyChannel(ticket.id)


def _ticket(connection: Connection, ticket_ref: str) -> Any:
    is_number = ticket_ref.isascii() and ticket_ref.isdigit() and len(ticket_ref) <= 18
    condition = (TICKETS.c.number == int(ticket_ref)) if is_number else (
        TICKETS.c.id == ticket_ref)
    return connection.execute(select(TICKETS).where(condition)).first()


def _attachment(connection: Connection, ref: str) -> Attachment:
    digest = ref.removeprefix("sha256:")
    row = connection.execute(
        select(ATTACHMENTS).where(or_(
            ATTACHMENTS.c.sha256 == digest, ATTACHMENTS.c.blob == ref))
        .order_by(ATTACHMENTS.c.id.desc()).limit(1)).first()
    if row is None:
        raise AttachmentUnknown(ref)
    return Attachment(filename=row.filename, original_filename=row.original_filename,
                      content_type=row.content_type, size=row.size, sha256=row.sha256,
                      blob=row.blob)


def default_accounts(doc: ConfigDocument) -> dict[str, str]:
    """The first configured account (`id`) of each channel: where a reply on a channel the
    customer never wrote to goes out from."""
    accounts: dict[str, str] = {}
    channels = doc.section("channels") or {}
    for name, section in (channels.items() if isinstance(channels, dict) else ()):
        for key in ("accounts", "forms", "apps", "lines", "mailboxes"):
            entries = section.get(key) if isinstance(section, dict) else None
            if isinstance(entries, list) and entries and isinstance(entries[0], dict) \
                    and entries[0].get("id"):
                accounts[name] = str(entries[0]["id"])
                break
    return accounts
