"""Read queries of the agent API: ticket lists and details, customers, the event log, blobs."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, and_, func, literal, or_, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from intake.errors import StorageUnavailable

from . import db, ticket_order
from .events import EVENTS
from .failures import storage_unavailable
from .links import read_links, thread_of
from .planner import normalize_identity
from .schemas import (
    DONE_STATUSES,
    AttachmentView,
    CustomerEventView,
    CustomerTicketView,
    CustomerView,
    DeliveryView,
    EscalationView,
    IdentityView,
    MessageView,
    NoteView,
    SatisfactionView,
    SlaView,
    TicketDetail,
    TicketLink,
    TicketView,
    TimerView,
)
from .scope import Access, current, ticket_access, visible_events, visible_tickets, where_visible
from .statements import (
    ATTACHMENTS,
    CUSTOMERS,
    IDENTITIES,
    MESSAGES,
    TICKET_TAGS,
    TICKETS,
    TIMERS,
)
from .tickets_config import TicketsConfig

NOTES = db.TicketNote.__table__  # internal notes (notes.py)

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
CUSTOMER_TICKETS = 100  # the newest ones shown on `GET /api/v1/customers/{id}`


@dataclass(frozen=True, slots=True)
class TicketFilter:
    """The filters of `GET /api/v1/tickets`; `status` may hold "open" (= not done)."""

    channel: str | None = None
    account: str | None = None
    desk: str | None = None
    skill_group: str | None = None
    status: tuple[str, ...] = ()
    customer_id: str | None = None
    priority: str | None = None
    category: str | None = None
    idempotency_key: str | None = None
    reference: str | None = None
    tag: str | None = None  # one tag's spelling (tags.py)
    assignee: str | None = None  # an agent id; "" for unassigned tickets
    first_contact: str | None = None  # an agent id
    reminder: str | None = None  # "due": a due reminder of the caller's (reminders.py)
    sla: str | None = None  # "warning" or "breached" (ticket_order.py)
    sort: str | None = None  # created (None), updated, due, priority (ticket_order.py)


@dataclass(slots=True)
class TicketPageResult:
    items: list[TicketView]
    next: str | None


class CursorInvalid(ValueError):
    """The cursor was not produced by `list_tickets`."""


def encode_cursor(created_at: datetime, ticket_id: str) -> str:
    raw = orjson.dumps([created_at.isoformat(), ticket_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, ticket_id = orjson.loads(raw)
        created_at = datetime.fromisoformat(stamp)
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise CursorInvalid(str(exc)) from exc
    if created_at.tzinfo is None or not isinstance(ticket_id, str):
        raise CursorInvalid("malformed cursor")
    return created_at, ticket_id


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """What the agent API needs to serve a blob some stored message references."""

    sha256: str
    blob: str
    content_type: str
    filename: str


class TicketReader:
    """The read side of the ticket core database (the agent API, the SSE stream, the relay)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # The `tickets` config section: custom fields are shown (stale ones marked) by it.
        self.tickets = TicketsConfig()

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as connection:
                yield connection
        except (OSError, TimeoutError, sa_exc.SQLAlchemyError) as exc:
            if storage_unavailable(exc):
                raise StorageUnavailable(f"database unavailable: {exc}") from exc
            raise

    async def ping(self) -> None:
        """Raise StorageUnavailable unless the database answers."""
        async with self._reading() as conn:
            await conn.execute(select(literal(1)))

    async def list_tickets(self, filters: TicketFilter | None = None, *,
                           limit: int = DEFAULT_LIMIT,
                           cursor: str | None = None) -> TicketPageResult:
        """Newest first, keyset-paginated on (created_at, id); raises CursorInvalid."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
        filters = filters or TicketFilter()
        query = where_visible(_filtered(select(TICKETS), filters), visible_tickets())
        if filters.sort not in (None, "created"):
            return await self._list_sorted(query, filters.sort, limit, cursor)
        if cursor:
            created_at, ticket_id = decode_cursor(cursor)
            query = query.where(or_(
                TICKETS.c.created_at < created_at,
                and_(TICKETS.c.created_at == created_at, TICKETS.c.id < ticket_id)))
        query = query.order_by(TICKETS.c.created_at.desc(), TICKETS.c.id.desc()).limit(limit + 1)
        async with self._reading() as conn:
            rows = (await conn.execute(query)).all()
            timers = await self._timers(conn, [row.id for row in rows[:limit]])
            links = await read_links(conn, rows[:limit])
        items = [_ticket_view(row, timers.get(row.id, []), links.get(row.id, []),
                              self.tickets) for row in rows[:limit]]
        following = None
        if len(rows) > limit:
            following = encode_cursor(items[-1].created_at, items[-1].id)
        return TicketPageResult(items=items, next=following)

    async def _list_sorted(self, query: Any, sort: str, limit: int,
                           cursor: str | None) -> TicketPageResult:
        """`?sort=updated|due|priority` (ticket_order.py); raises CursorInvalid."""
        if cursor:
            try:
                query = ticket_order.after(query, sort, cursor)
            except ticket_order.CursorInvalid as exc:
                raise CursorInvalid(str(exc)) from exc
        query = ticket_order.ordered(query, sort).limit(limit + 1)
        async with self._reading() as conn:
            rows = (await conn.execute(query)).all()
            timers = await self._timers(conn, [row.id for row in rows[:limit]])
            links = await read_links(conn, rows[:limit])
        items = [_ticket_view(row, timers.get(row.id, []), links.get(row.id, []),
                              self.tickets) for row in rows[:limit]]
        following = ticket_order.encode(sort, rows[limit - 1]) if len(rows) > limit else None
        return TicketPageResult(items=items, next=following)

    async def get_ticket(self, ticket: str | int) -> TicketDetail | None:
        """A ticket by id, or by number (an int or a string of digits), with its messages."""
        # ASCII digits only: str.isdigit() also accepts '¹', which int() refuses.
        is_number = isinstance(ticket, str) and ticket.isascii() and ticket.isdigit()
        if is_number and len(ticket) > 18:
            return None
        if isinstance(ticket, int) or is_number:
            condition = TICKETS.c.number == int(ticket)
        else:
            condition = TICKETS.c.id == ticket
        async with self._reading() as conn:
            row = (await conn.execute(where_visible(select(TICKETS).where(condition),
                                                    visible_tickets()))).first()
            if row is None:
                return None
            # A linked ticket shows the messages of its customer-facing ticket (links.py).
            messages = (await conn.execute(
                select(MESSAGES).where(MESSAGES.c.ticket_id == thread_of(row))
                .order_by(func.coalesce(MESSAGES.c.occurred_at, MESSAGES.c.received_at),
                          MESSAGES.c.received_at, MESSAGES.c.persisted_at, MESSAGES.c.id)
            )).all()
            attachments = await self._attachments(conn, [m.id for m in messages])
            timers = await self._timers(conn, [row.id])
            links = await read_links(conn, [row])
            notes = [note_view(n) for n in await conn.execute(
                select(NOTES).where(NOTES.c.ticket_id == row.id)
                .order_by(NOTES.c.created_at, NOTES.c.id))]
        return TicketDetail(**_ticket_view(row, timers.get(row.id, []),
                                           links.get(row.id, []), self.tickets).model_dump(),
                            messages=[_message_view(m, attachments.get(m.id, []))
                                      for m in messages], notes=notes)

    async def ticket_access(self, ticket: str) -> tuple[str, Access] | None:
        """The ticket's id and the caller's access to it (scope.py), by id or number; None
        when there is no such ticket or it is out of the caller's scope (both answer 404)."""
        if not ticket.isascii() or len(ticket) > 64:
            return None
        if ticket.isdigit():
            if len(ticket) > 18:
                return None
            condition = TICKETS.c.number == int(ticket)
        else:
            condition = TICKETS.c.id == ticket
        async with self._reading() as conn:
            row = (await conn.execute(select(
                TICKETS.c.id, TICKETS.c.desk, TICKETS.c.first_contact_agent_id
            ).where(condition))).first()
        if row is None:
            return None
        access = ticket_access(row.desk, row.first_contact_agent_id)
        return None if access is None else (row.id, access)

    async def _timers(self, conn: AsyncConnection,
                      ticket_ids: list[str]) -> dict[str, list[TimerView]]:
        if not ticket_ids:
            return {}
        rows = await conn.execute(
            select(TIMERS).where(TIMERS.c.ticket_id.in_(ticket_ids),
                                 # an agent's; a customer message for the SLA (sla.py)
                                 TIMERS.c.kind.not_in(("reminder", "sla_message")))
            .order_by(TIMERS.c.due_at, TIMERS.c.id))
        found: dict[str, list[TimerView]] = {}
        for r in rows:
            found.setdefault(r.ticket_id, []).append(TimerView(
                id=r.id, kind=r.kind, ref=r.ref, due_at=r.due_at, state=r.state,
                fired_at=r.fired_at, reason=r.reason))
        return found

    async def _attachments(self, conn: AsyncConnection,
                           message_ids: list[str]) -> dict[str, list[AttachmentView]]:
        if not message_ids:
            return {}
        rows = await conn.execute(
            select(ATTACHMENTS).where(ATTACHMENTS.c.message_id.in_(message_ids))
            .order_by(ATTACHMENTS.c.id))
        found: dict[str, list[AttachmentView]] = {}
        for r in rows:
            found.setdefault(r.message_id, []).append(AttachmentView(
                filename=r.filename, original_filename=r.original_filename,
                content_type=r.content_type, size=r.size, sha256=r.sha256, blob=r.blob,
                content_id=r.content_id, inline=r.inline))
        return found

    async def get_message(self, message_id: str) -> MessageView | None:
        async with self._reading() as conn:
            row = (await conn.execute(select(MESSAGES).where(MESSAGES.c.id == message_id))
                   ).first()
            if row is None:
                return None
            attachments = await self._attachments(conn, [row.id])
        return _message_view(row, attachments.get(row.id, []))

    async def customer_timeline(self, customer_id: str) -> list[MessageView]:
        """Every message of a customer, tickets and events alike, in source order."""
        query = select(MESSAGES).where(MESSAGES.c.customer_id == customer_id)
        visible = visible_tickets()
        if visible is not None:  # events (no ticket) are the customer's, shared across desks
            query = query.where(or_(MESSAGES.c.ticket_id.is_(None), MESSAGES.c.ticket_id.in_(
                select(TICKETS.c.id).where(visible).scalar_subquery())))
        async with self._reading() as conn:
            messages = (await conn.execute(
                query.order_by(func.coalesce(MESSAGES.c.occurred_at, MESSAGES.c.received_at),
                          MESSAGES.c.received_at, MESSAGES.c.id))).all()
            attachments = await self._attachments(conn, [m.id for m in messages])
        return [_message_view(m, attachments.get(m.id, [])) for m in messages]

    async def get_customer(self, customer_id: str) -> CustomerView | None:
        """The customer with their events (`kind: event` messages), by `occurred_at`."""
        customers = await self._customers(CUSTOMERS.c.id == customer_id)
        if not customers:
            return None
        events = [CustomerEventView(
            type=str((m.event or {}).get("type", "")), key=(m.event or {}).get("key"),
            channel=m.channel, account=m.account, occurred_at=m.occurred_at or m.received_at,
            data=(m.event or {}).get("data") or {})
            for m in await self.customer_timeline(customer_id) if m.kind == "event"]
        async with self._reading() as conn:
            tickets = (await conn.execute(where_visible(
                select(TICKETS.c.id, TICKETS.c.number, TICKETS.c.status, TICKETS.c.desk,
                       TICKETS.c.channel, TICKETS.c.subject, TICKETS.c.created_at)
                .where(TICKETS.c.customer_id == customer_id,
                       TICKETS.c.primary_ticket_id.is_(None)), visible_tickets())
                .order_by(TICKETS.c.created_at.desc(), TICKETS.c.id.desc())
                .limit(CUSTOMER_TICKETS))).all()
        return customers[0].model_copy(update={"events": events, "tickets": [
            CustomerTicketView(id=t.id, number=t.number, status=t.status, desk=t.desk,
                               channel=t.channel, subject=t.subject, created_at=t.created_at)
            for t in tickets]})

    async def find_customers(self, kind: str, value: str) -> list[CustomerView]:
        """Customers owning the identity `kind:value` (at most one, by the unique constraint)."""
        owners = select(IDENTITIES.c.customer_id).where(
            IDENTITIES.c.kind == kind, IDENTITIES.c.value == normalize_identity(kind, value))
        return await self._customers(CUSTOMERS.c.id.in_(owners.scalar_subquery()))

    async def find_first_customer(self, pairs: list[tuple[str, str]]) -> list[CustomerView]:
        """The customer owning the first of these (kind, value) identities that is stored,
        in the order given; none found: an empty list."""
        wanted = [(kind, normalize_identity(kind, value)) for kind, value in pairs]
        async with self._reading() as conn:
            rows = (await conn.execute(select(
                IDENTITIES.c.kind, IDENTITIES.c.value, IDENTITIES.c.customer_id).where(or_(
                    *(and_(IDENTITIES.c.kind == kind, IDENTITIES.c.value == value)
                      for kind, value in wanted))))).all()
        owners = {(r.kind, r.value): r.customer_id for r in rows}
        first = next((owners[pair] for pair in wanted if pair in owners), None)
        return await self._customers(CUSTOMERS.c.id == first) if first else []

    async def _customers(self, condition: Any) -> list[CustomerView]:
        async with self._reading() as conn:
            customers = (await conn.execute(
                select(CUSTOMERS).where(condition)
                .order_by(CUSTOMERS.c.created_at, CUSTOMERS.c.id))).all()
            if not customers:
                return []
            ids = [c.id for c in customers]
            identities = (await conn.execute(
                select(IDENTITIES)
                .where(IDENTITIES.c.customer_id.in_(ids))
                .order_by(IDENTITIES.c.id))).all()
            counts: dict[tuple[str, bool], int] = {}
            for customer_id, status, n in await conn.execute(where_visible(
                    select(TICKETS.c.customer_id, TICKETS.c.status, func.count())
                    .where(TICKETS.c.customer_id.in_(ids),
                           TICKETS.c.primary_ticket_id.is_(None)),  # the customer's own
                    visible_tickets())  # in the caller's scope
                    .group_by(TICKETS.c.customer_id, TICKETS.c.status)):
                key = (customer_id, status in DONE_STATUSES)
                counts[key] = counts.get(key, 0) + int(n)
        by_customer: dict[str, list[IdentityView]] = {}
        for i in identities:
            by_customer.setdefault(i.customer_id, []).append(
                IdentityView(kind=i.kind, value=i.value, verified=i.verified))
        return [CustomerView(id=c.id, name=c.name, identities=by_customer.get(c.id, []),
                             created_at=c.created_at, updated_at=c.updated_at,
                             vip_level=c.vip_level, language=c.language,
                             fields=self.tickets.customer_field_set.shown(c.fields),
                             tickets_count=counts.get((c.id, True), 0)
                             + counts.get((c.id, False), 0),
                             open_tickets_count=counts.get((c.id, False), 0),
                             merged_into=c.merged_into)
                for c in customers]

    async def events_after(self, last_id: int, limit: int = 500) -> list[Any]:
        """Event rows with an id above `last_id`, in id order (in the caller's scope)."""
        query = where_visible(select(EVENTS).where(EVENTS.c.id > last_id),
                              visible_events(EVENTS.c.desk, EVENTS.c.ticket_id))
        async with self._reading() as conn:
            return list((await conn.execute(
                query.order_by(EVENTS.c.id).limit(limit))).all())

    async def last_event_id(self) -> int:
        async with self._reading() as conn:
            return int((await conn.execute(select(func.max(EVENTS.c.id)))).scalar() or 0)

    async def referenced_blob(self, sha256: str) -> StoredBlob | None:
        """The newest attachment row naming this digest: only referenced blobs are served, and
        only those of a message on a ticket in the caller's scope."""
        query = (select(ATTACHMENTS.c.sha256, ATTACHMENTS.c.blob, ATTACHMENTS.c.content_type,
                        ATTACHMENTS.c.filename).where(ATTACHMENTS.c.sha256 == sha256))
        visible = visible_tickets()
        if visible is not None:
            query = query.where(ATTACHMENTS.c.message_id.in_(
                select(MESSAGES.c.id).join(TICKETS, TICKETS.c.id == MESSAGES.c.ticket_id)
                .where(visible).scalar_subquery()))
        async with self._reading() as conn:
            row = (await conn.execute(
                query
                .order_by(ATTACHMENTS.c.id.desc()).limit(1))).first()
        if row is None:
            return None
        return StoredBlob(sha256=row.sha256, blob=row.blob, content_type=row.content_type,
                          filename=row.filename)


def _filtered(query: Select[Any], f: TicketFilter) -> Select[Any]:
    for column, value in ((TICKETS.c.channel, f.channel), (TICKETS.c.account, f.account),
                          (TICKETS.c.desk, f.desk), (TICKETS.c.skill_group, f.skill_group),
                          (TICKETS.c.customer_id, f.customer_id),
                          (TICKETS.c.priority, f.priority), (TICKETS.c.category, f.category)):
        if value is not None:
            query = query.where(column == value)
    if f.status:
        wanted = [s for s in f.status if s != "open"]
        conditions = [TICKETS.c.status.in_(wanted)] if wanted else []
        if "open" in f.status:
            conditions.append(TICKETS.c.status.not_in(DONE_STATUSES))
        query = query.where(or_(*conditions))
    if f.assignee is not None:
        query = query.where(TICKETS.c.assignee_id.is_(None) if f.assignee == ""
                            else TICKETS.c.assignee_id == f.assignee)
    if f.first_contact is not None:
        query = query.where(TICKETS.c.first_contact_agent_id == f.first_contact)
    if f.tag is not None:
        query = query.where(TICKETS.c.id.in_(
            select(TICKET_TAGS.c.ticket_id).where(TICKET_TAGS.c.tag == f.tag)))
    if f.sla is not None:
        query = query.where(ticket_order.sla_condition(f.sla))
    if f.reminder == "due":
        from .reminders import due_reminder_tickets  # it builds on this module

        query = query.where(TICKETS.c.id.in_(due_reminder_tickets(current())))
    # A message's tickets: the one it is stored on and the ones linked to that (links.py).
    for column, value in ((MESSAGES.c.idempotency_key, f.idempotency_key),
                          (MESSAGES.c.reference, f.reference)):
        if value is not None:
            holders = select(MESSAGES.c.ticket_id).where(column == value).scalar_subquery()
            query = query.where(or_(TICKETS.c.id.in_(holders),
                                    TICKETS.c.primary_ticket_id.in_(holders)))
    return query


def _sla_view(sla: dict[str, Any] | None) -> SlaView | None:
    """The ticket's `sla` without the facts its clocks are read from (sla_policy.py)."""
    if not sla:
        return None
    return SlaView.model_validate({k: v for k, v in sla.items() if k != "facts"})


def _ticket_view(row: Any, timers: list[TimerView], links: list[TicketLink],
                 tickets: TicketsConfig) -> TicketView:
    return TicketView(
        id=row.id, number=row.number, channel=row.channel, account=row.account, desk=row.desk,
        skill_group=row.skill_group, status=row.status, priority=row.priority,
        category=row.category, tags=row.tags or [], subject=row.subject,
        customer_id=row.customer_id, conversation_id=row.conversation_id, route=row.route,
        created_at=row.created_at, updated_at=row.updated_at,
        acknowledged_at=row.acknowledged_at,
        sla=_sla_view(row.sla), timers=timers,
        escalation=EscalationView.model_validate(row.escalation) if row.escalation else None,
        satisfaction=SatisfactionView.model_validate(row.satisfaction)
        if row.satisfaction else None,
        role=row.role, customer_facing=row.customer_facing,
        # Another desk's linked ticket is out of scope: not even its number shows.
        links=[link for link in links if current().sees_desk(link.desk)],
        first_contact_agent_id=row.first_contact_agent_id,
        assignee_id=row.assignee_id, assigned_at=row.assigned_at,
        fields=tickets.ticket_field_set.shown(row.fields, row.desk),
        version=row.version, reopened_count=row.reopened_count,
        follow_up_of=row.follow_up_of, merged_into=row.merged_into)


def note_view(row: Any) -> NoteView:
    return NoteView(id=row.id, ticket_id=row.ticket_id, text=row.text,
                    mentions=list(row.mentions or []), author=row.author,
                    created_at=row.created_at)


def _message_view(row: Any, attachments: list[AttachmentView]) -> MessageView:
    return MessageView(
        id=row.id, ticket_id=row.ticket_id, customer_id=row.customer_id,
        direction=row.direction, kind=row.kind, channel=row.channel, account=row.account,
        subject=row.subject, text=row.text, html=row.html, flags=row.flags or [],
        attachments=attachments, call=row.call, form=row.form, event=row.event,
        reference=row.reference, channel_data=row.channel_data,
        sender_name=row.sender_name, occurred_at=row.occurred_at,
        received_at=row.received_at, persisted_at=row.persisted_at,
        idempotency_key=row.idempotency_key, trace_id=row.trace_id, raw=row.raw,
        delivery=(DeliveryView(status=row.delivery_status, reason=row.delivery_reason)
                  if row.direction == "out" and row.delivery_status else None),
        route=row.route, original_ticket_number=row.original_ticket_number)
