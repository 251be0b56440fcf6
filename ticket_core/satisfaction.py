"""Satisfaction requests (满意度, issue 17): the rating link sent on a resolution, its expiry,
and answers given through the link or recorded by an agent (回访 by phone).

An agent's resolution (`PATCH …/tickets/{id} {"status": "resolved"}`, status.py) with
`tickets.satisfaction.on_resolve`, and a system auto-resolve only with `on_auto_resolve`,
sends one request in the same transaction: an outgoing message of kind
`satisfaction_request` whose text holds `{{satisfaction.url}}` =
`<tickets.public_base_url>/csat/<token>`, its outbox row, a `satisfaction_requests` row
keeping the SHA-256 of the token (256 random bits; the stored message text shows the link
without it), a `satisfaction_expiry` timer due `expires_after` later, and the events
`message.created` and `satisfaction.requested` (never the token). A new resolution after a
reopen supersedes the ticket's earlier requests (their links answer 410).

Where it goes: the ticket's channel to the customer's identity it reaches; a channel that
cannot carry replies (the web form), or a customer it cannot reach, gets mail on the `email`
channel from the desk's `reply_from` address (the email account with that address) to the
customer's email identity; neither: no request (logged `satisfaction_request_unreachable`).

The ticket's `satisfaction` JSON (migration 0005) holds the latest answer and the latest
request's `request_status` (`sent`, `answered`, `expired`, `superseded`), written with the
request row in one transaction, so reading a ticket needs no join.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from intake.config import ConfigDocument
from intake.logging import get_logger
from intake.message import Identity, OutboundMessage, Thread
from intake.placeholders import Unresolved

from .autoreply import _values as placeholder_values
from .autoreply import render
from .events import PlannedEvent
from .replies import NEVER_REPLIES, REACHES, TicketNotFound
from .satisfaction_db import SATISFACTION_REQUESTS
from .statements import IDENTITIES, MESSAGES, OUTBOX, TICKETS, TIMERS, CoreWriteStatements
from .store import append_events
from .threads import TicketRef
from .timeline import ticket_condition
from .timers import timer_row

KIND = "satisfaction_expiry"
MESSAGE_KIND = "satisfaction_request"
VIA_LINK = "web"  # `via` of an answer given on the rating page
TOKEN_BYTES = 32  # 256 random bits (the issue asks for at least 128)
MAX_COMMENT = 2000
# The link as the stored message shows it: agents read the text, the token stays out.
HIDDEN_TOKEN = "…"
REQUEST_STATUSES = ("sent", "answered", "expired", "superseded")

log = get_logger(component="satisfaction")


@dataclass(frozen=True, slots=True)
class SatisfactionPolicy:
    """`tickets.satisfaction`, `tickets.public_base_url` and the desks' `reply_from` (as the
    email account id that sends from that address), reloaded with the timelines."""

    on_resolve: bool = False
    on_auto_resolve: bool = False
    expires_after: timedelta = timedelta(days=7)
    subject: str | None = None
    text: str = "请为本次服务评分：{{satisfaction.url}}"
    public_base_url: str | None = None
    reply_from: Mapping[str, str] = field(default_factory=dict)  # desk → email account

    @classmethod
    def from_document(cls, doc: ConfigDocument) -> SatisfactionPolicy:
        """The policy of a config document; a section that does not load is logged and
        sends nothing (the service refuses such a config at start anyway)."""
        from .tickets_config import load_tickets

        try:
            tickets = load_tickets(doc)
        except Exception as exc:
            log.warning("satisfaction_settings_unreadable", error=str(exc)[:300])
            return cls()
        accounts: dict[str, str] = {}
        channels = doc.section("channels") or {}
        email = channels.get("email") if isinstance(channels, dict) else None
        for account in (email.get("accounts") or []) if isinstance(email, dict) else []:
            if isinstance(account, dict) and account.get("id"):
                for address in (account.get("address"), account["id"]):
                    if isinstance(address, str):
                        accounts.setdefault(address.lower(), str(account["id"]))
        reply_from: dict[str, str] = {}
        for desk in doc.section("desks") or []:
            sender = desk.get("reply_from") if isinstance(desk, dict) else None
            if isinstance(sender, dict) and isinstance(sender.get("email"), str):
                address = sender["email"].lower()
                reply_from[str(desk.get("id"))] = accounts.get(address, address)
        s = tickets.satisfaction
        return cls(on_resolve=s.on_resolve, on_auto_resolve=s.on_auto_resolve,
                   expires_after=s.expires_after, subject=s.subject, text=s.text,
                   public_base_url=tickets.public_base_url, reply_from=reply_from)


class RequestUnknown(LookupError):
    """No request has this token (404)."""


class RequestGone(Exception):
    """The request's link no longer takes answers: expired or superseded (410)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def stamp(at: datetime) -> str:
    """A time as the ticket's `satisfaction` JSON keeps it: always the same width, so text
    order is time order (planner.py compares them)."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _ref(ticket: Any, status: str | None = None) -> TicketRef:
    return TicketRef(id=ticket.id, number=ticket.number, status=status or ticket.status,
                     customer_id=ticket.customer_id, channel=ticket.channel, desk=ticket.desk)


def recipient(connection: Connection, ticket: Any,
              policy: SatisfactionPolicy) -> tuple[str, str, Identity] | None:
    """(channel, account, identity) the request goes to; see the module's docstring."""
    identities = connection.execute(
        select(IDENTITIES.c.kind, IDENTITIES.c.value, IDENTITIES.c.verified)
        .where(IDENTITIES.c.customer_id == ticket.customer_id)
        .order_by(IDENTITIES.c.verified.desc(), IDENTITIES.c.id)).all()

    def reach(kinds: tuple[str, ...]) -> Identity | None:
        for kind in kinds:
            for identity in identities:
                if identity.kind == kind:
                    return Identity(kind=kind, value=identity.value,
                                    verified=identity.verified)
        return None

    if ticket.channel not in NEVER_REPLIES:
        to = reach(REACHES.get(ticket.channel, ()))
        if to is not None:
            return ticket.channel, ticket.account, to
    account = policy.reply_from.get(ticket.desk or "")
    to = reach(REACHES["email"]) if account else None
    return ("email", account, to) if account and to is not None else None


def supersede(connection: Connection, ticket_id: str, now: datetime) -> list[str]:
    """Close the ticket's open requests (a new one replaces them): their ids."""
    open_ids = list(connection.execute(select(SATISFACTION_REQUESTS.c.id).where(
        SATISFACTION_REQUESTS.c.ticket_id == ticket_id,
        SATISFACTION_REQUESTS.c.closed_at.is_(None))).scalars())
    if open_ids:
        connection.execute(update(SATISFACTION_REQUESTS).where(
            SATISFACTION_REQUESTS.c.id.in_(open_ids)).values(status="superseded",
                                                             closed_at=now))
        connection.execute(update(TIMERS).where(
            TIMERS.c.ticket_id == ticket_id, TIMERS.c.kind == KIND,
            TIMERS.c.ref.in_(open_ids), TIMERS.c.state == "pending").values(
                state="done", reason="superseded"))
    return open_ids


def request_satisfaction(connection: Connection, ticket: Any, now: datetime,
                         policy: SatisfactionPolicy | None, *,
                         automatic: bool) -> list[PlannedEvent]:
    """On `ticket`'s resolution (the row as read before it), in the caller's transaction:
    the request's rows and timer; returns its events for the caller to append (last).
    Nothing when the policy does not ask for one, the ticket is internal, or nobody can be
    reached."""
    if policy is None or not (policy.on_auto_resolve if automatic else policy.on_resolve):
        return []
    if not ticket.customer_facing:  # a linked internal ticket: its customer is the primary's
        return []
    if policy.public_base_url is None:
        log.warning("satisfaction_request_skipped", ticket_id=ticket.id,
                    reason="tickets.public_base_url is not set")
        return []
    target = recipient(connection, ticket, policy)
    if target is None:
        log.info("satisfaction_request_unreachable", ticket_id=ticket.id,
                 channel=ticket.channel, desk=ticket.desk)
        return []
    channel, account, to = target
    token = secrets.token_urlsafe(TOKEN_BYTES)
    link = f"{policy.public_base_url}/csat/"
    values = placeholder_values(connection, ticket)
    try:
        text = render(policy.text, ticket.number, ticket.subject,
                      {**values, "satisfaction.url": link + token})
        shown = render(policy.text, ticket.number, ticket.subject,
                       {**values, "satisfaction.url": link + HIDDEN_TOKEN})
        subject = (render(policy.subject, ticket.number, ticket.subject, values)
                   if policy.subject else ticket.subject)
    except Unresolved as exc:  # never a hole: nothing is sent, and the log says why
        log.warning("satisfaction_request_unresolved", ticket_id=ticket.id,
                    placeholders=exc.names)
        return []
    superseded = supersede(connection, ticket.id, now)
    request_id, message_id = str(uuid.uuid4()), uuid.uuid4()
    own_channel = channel == ticket.channel
    replied_to = connection.execute(
        select(MESSAGES.c.message_id).where(
            MESSAGES.c.ticket_id == ticket.id, MESSAGES.c.direction == "in",
            MESSAGES.c.channel == channel, MESSAGES.c.message_id.is_not(None))
        .order_by(MESSAGES.c.persisted_at.desc()).limit(1)).scalar()
    key = f"satisfaction:{request_id}"
    outbound = OutboundMessage(
        id=message_id, idempotency_key=key, ticket_id=ticket.id,
        ticket_number=str(ticket.number), channel=channel, account=account,  # type: ignore[arg-type]
        to=to, kind=MESSAGE_KIND, subject=subject, text=text,
        thread=Thread(in_reply_to=replied_to,
                      conversation_id=ticket.conversation_id if own_channel else None,
                      ticket_number=str(ticket.number), ticket_id=ticket.id),
        created_at=now)
    statements = CoreWriteStatements(connection)
    statements.insert(MESSAGES, [{
        "id": str(message_id), "ticket_id": ticket.id, "customer_id": ticket.customer_id,
        "direction": "out", "kind": MESSAGE_KIND, "channel": channel, "account": account,
        "subject": subject, "text": shown, "html": None, "flags": [], "form": None,
        "call": None, "event": None,
        "channel_data": {"to": to.model_dump(mode="json"), "satisfaction_request": request_id},
        "thread": None, "idempotency_key": key, "message_id": None, "reference": None,
        "occurred_at": now, "received_at": now, "persisted_at": now, "raw": None,
        "trace_id": None, "sender_name": None, "delivery_status": "pending",
        "delivery_reason": None, "delivery_attempt": None}])
    statements.insert(OUTBOX, [{
        "message_id": str(message_id), "routing_key": f"{channel}.{account}",
        "body": outbound.model_dump_json(), "created_at": now, "published_at": None}])
    expires_at = now + policy.expires_after
    connection.execute(SATISFACTION_REQUESTS.insert(), [{
        "id": request_id, "ticket_id": ticket.id, "token_sha256": token_digest(token),
        "status": "sent", "message_id": str(message_id), "channel": channel,
        "account": account, "created_at": now, "expires_at": expires_at,
        "answered_at": None, "closed_at": None}])
    connection.execute(TIMERS.insert(), [timer_row(KIND, ticket.id, request_id, expires_at,
                                                   now, {"request_id": request_id})])
    current = connection.execute(select(TICKETS.c.satisfaction).where(
        TICKETS.c.id == ticket.id)).scalar()
    connection.execute(update(TICKETS).where(TICKETS.c.id == ticket.id).values(
        satisfaction={**(current or {}), "request_status": "sent",
                      "requested_at": stamp(now)},
        updated_at=now, version=TICKETS.c.version + 1))
    ref = _ref(ticket, "resolved")
    actor = "system:auto_resolve" if automatic else "system:on_resolve"
    return [
        PlannedEvent("message.created", now, ref, ticket.customer_id, "system",
                     {"message_id": str(message_id), "direction": "out",
                      "kind": MESSAGE_KIND, "channel": channel, "account": account}),
        PlannedEvent("satisfaction.requested", now, ref, ticket.customer_id, actor,
                     {"request_id": request_id, "message_id": str(message_id),
                      "channel": channel, "account": account,
                      "expires_at": expires_at.isoformat(), "superseded": superseded})]


def record_answer(connection: Connection, ticket: Any, score: int, comment: str | None,
                  via: str, now: datetime, actor: str,
                  request_id: str | None = None) -> tuple[dict[str, Any], PlannedEvent]:
    """A rating of `ticket` (its row, locked by the caller): the ticket's `satisfaction`
    replaced (the first answer's time kept) and its `satisfaction.answered` event, both
    answers kept in the log. `request_id`: given through that request's link."""
    previous: dict[str, Any] = dict(ticket.satisfaction or {})
    answered_at = stamp(now)
    satisfaction = {**previous, "score": score, "comment": comment, "via": via,
                    "answered_at": answered_at,
                    "first_answered_at": previous.get("first_answered_at") or answered_at}
    if request_id is not None:
        satisfaction["request_status"] = "answered"
        connection.execute(update(SATISFACTION_REQUESTS).where(
            SATISFACTION_REQUESTS.c.id == request_id).values(status="answered",
                                                             answered_at=now))
    connection.execute(update(TICKETS).where(TICKETS.c.id == ticket.id).values(
        satisfaction=satisfaction, updated_at=now, version=TICKETS.c.version + 1))
    event = PlannedEvent(
        "satisfaction.answered", now, _ref(ticket), ticket.customer_id, actor,
        {"score": score, "comment": comment, "via": via, "answered_at": answered_at,
         "first_answered_at": satisfaction["first_answered_at"],
         "previous_score": previous.get("score"), "request_id": request_id})
    return satisfaction, event


def _locked_ticket(connection: Connection, condition: Any) -> Any:
    query = select(TICKETS).where(condition)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()  # the satisfaction read is the one overwritten
    return connection.execute(query).first()


def answer_by_token(connection: Connection, token: str, score: int, comment: str | None,
                    now: datetime) -> dict[str, Any]:
    """An answer on the rating page, in the caller's transaction: the ticket's new
    `satisfaction`. Raises RequestUnknown (404) or RequestGone (410) before writing."""
    digest = token_digest(token)
    found = connection.execute(select(SATISFACTION_REQUESTS.c.ticket_id).where(
        SATISFACTION_REQUESTS.c.token_sha256 == digest)).scalar()
    if found is None:
        raise RequestUnknown()
    ticket = _locked_ticket(connection, TICKETS.c.id == found)  # the ticket before its rows
    request: Any = connection.execute(select(SATISFACTION_REQUESTS).where(
        SATISFACTION_REQUESTS.c.token_sha256 == digest)).one()
    if request.closed_at is not None or request.expires_at <= now:
        raise RequestGone("superseded" if request.status == "superseded" else "expired")
    satisfaction, event = record_answer(connection, ticket, score, comment, VIA_LINK, now,
                                        "customer", request.id)
    append_events(CoreWriteStatements(connection), [event])
    return satisfaction


def answer_by_agent(connection: Connection, ticket_ref: str, score: int,
                    comment: str | None, via: str, now: datetime,
                    actor: str) -> dict[str, Any]:
    """A rating an agent records (回访 by phone), in the caller's transaction: the ticket's
    new `satisfaction`. Raises TicketNotFound."""
    ticket = _locked_ticket(connection, ticket_condition(ticket_ref))
    if ticket is None:
        raise TicketNotFound(ticket_ref)
    satisfaction, event = record_answer(connection, ticket, score, comment, via, now, actor)
    append_events(CoreWriteStatements(connection), [event])
    return satisfaction


def request_state(request: Any, now: datetime) -> str | None:
    """None while the link takes answers; else why not (`expired`, `superseded`)."""
    if request.status == "superseded":
        return "superseded"
    if request.closed_at is not None or request.expires_at <= now:
        return "expired"
    return None


def expiry_due(work: Any, timer: Any, now: datetime) -> tuple[str, str | None]:
    """A `satisfaction_expiry` timer come due, on the scheduler's locked `TicketWork`: the
    link stops taking answers; unanswered, the request is `expired` (on the ticket too)."""
    connection: Connection = work.connection
    request: Any = connection.execute(select(SATISFACTION_REQUESTS).where(
        SATISFACTION_REQUESTS.c.id == timer.ref)).first()
    if request is None:
        return "cancelled", "request not found"
    if request.closed_at is not None:
        return "done", request.status
    answered = request.status == "answered"
    connection.execute(update(SATISFACTION_REQUESTS).where(
        SATISFACTION_REQUESTS.c.id == request.id).values(
            status="answered" if answered else "expired", closed_at=now))
    if not answered:
        current = connection.execute(select(TICKETS.c.satisfaction).where(
            TICKETS.c.id == work.row.id)).scalar()
        connection.execute(update(TICKETS).where(TICKETS.c.id == work.row.id).values(
            satisfaction={**(current or {}), "request_status": "expired"},
            updated_at=now, version=TICKETS.c.version + 1))
    work.event("satisfaction.expired", now, f"system:{KIND}",
               {"request_id": request.id, "answered": answered,
                "expires_at": request.expires_at.isoformat()})
    return "fired", None
