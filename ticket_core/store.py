"""The ticket store: persists routed messages (customers, tickets, threading) and answers queries.

A batch of messages is persisted in one transaction, in three steps: load everything the batch
could need in a few set-based queries (known idempotency keys, identities, thread targets), plan
in memory message by message (so a later message of the batch sees the customers and tickets an
earlier one created), then write with one bulk statement per table. A single message is a batch
of one, about eight statements. Writers that race on PostgreSQL (same idempotency key, same new
identity) meet a unique constraint; the loser rolls back and plans again against the winner's
rows, which turns a repeated key into `duplicate=True`.

Threading, first hint that leads somewhere wins (events never join or open a ticket):
`thread.ticket_id`, then `thread.ticket_number` (digits taken from e.g. "#1042"), then
`in_reply_to` and `references` (newest first) against stored Message-IDs, then
`conversation_id` (the latest ticket of that conversation on the same channel that is not
closed or merged), then `join_latest_open` (the customer's latest ticket on the same channel that
is not resolved, closed or merged); otherwise a new ticket. An inbound message appended to a
pending or resolved ticket reopens it (status `open`).

Identities: e-mail addresses are stored lower-cased. The sender's customer is the oldest one
owning any of the message's identities; the others are added to it unless another customer owns
them already (never taken away); a verified identity upgrades a stored unverified one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, and_, func, literal, or_, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from intake.errors import StorageUnavailable
from intake.logging import get_logger
from intake.message import Message, utcnow

from . import db
from .schemas import (
    DONE_STATUSES,
    AttachmentView,
    CustomerView,
    IdentityView,
    MessageView,
    TicketDetail,
    TicketView,
)
from .writes import (
    ATTACHMENTS,
    COUNTERS,
    CUSTOMERS,
    IDENTITIES,
    MESSAGES,
    TICKETS,
    UNJOINABLE_STATUSES,
    CoreWriteStatements,
    SqliteWriter,
    WriteStatements,
)

# An inbound message on a ticket waiting for the customer, or already solved, reopens it.
REOPENED_BY_CUSTOMER = ("pending", "resolved")
OWNING_ROLES = ("owner", "primary")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
WRITE_ATTEMPTS = 5
# PostgreSQL: serialization failure, deadlock detected. Retried here, then surfaced as transient.
RETRYABLE_SQLSTATES = {"40001", "40P01"}
# PostgreSQL SQLSTATE classes meaning "the server or the connection is not there".
UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P")

log = get_logger(component="ticket_store")


@dataclass(frozen=True, slots=True)
class PersistResult:
    ticket_id: str | None  # None for an event
    ticket_number: int | None
    message_id: str
    customer_id: str
    created_ticket: bool
    duplicate: bool


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


def normalize_identity(kind: str, value: str) -> str:
    """One spelling per identity: e-mail addresses compare case-insensitively in practice."""
    value = value.strip()
    return value.lower() if kind == "email" else value


def parse_ticket_number(text: str | None) -> int | None:
    """'1042', '#1042' or 'T-1042' (a subject tag) → 1042."""
    if not text:
        return None
    found = re.search(r"\d{1,18}", text)
    return int(found.group()) if found else None


def storage_unavailable(exc: BaseException) -> bool:
    """Whether a database error means "not reachable now" (retry later), not a bug."""
    if isinstance(exc, (OSError, TimeoutError, sa_exc.TimeoutError, sa_exc.DisconnectionError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return True
        code = _sqlstate(exc) or ""
        return code.startswith(UNAVAILABLE_SQLSTATE_PREFIXES) or code in RETRYABLE_SQLSTATES
    return False


def _sqlstate(exc: sa_exc.DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)


@dataclass(slots=True)
class _TicketRef:
    id: str
    number: int | None  # None until the batch's numbers are allocated
    status: str
    customer_id: str
    channel: str
    new: bool = False


@dataclass(slots=True)
class _Known:
    """An identity already owned by a customer (in the database or earlier in the batch)."""

    customer_id: str
    verified: bool
    customer_created_at: datetime


@dataclass(slots=True)
class _Plan:
    results: list[PersistResult | None] = field(default_factory=list)
    customers: list[dict[str, Any]] = field(default_factory=list)
    identities_new: list[dict[str, Any]] = field(default_factory=list)  # of new customers
    identities_added: list[dict[str, Any]] = field(default_factory=list)  # to found customers
    verify: set[tuple[str, str]] = field(default_factory=set)
    tickets: list[dict[str, Any]] = field(default_factory=list)
    new_ticket_refs: list[_TicketRef] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    touched: dict[str, _TicketRef] = field(default_factory=dict)
    # (result slot, ticket, message id, customer id, created): results once numbers exist.
    pending: list[tuple[int, _TicketRef | None, str, str, bool]] = field(default_factory=list)


class TicketStore:
    """The only writer of the ticket core database, and its reader for the agent API."""

    def __init__(self, engine: AsyncEngine, *, sqlite_fast_path: bool = True) -> None:
        """`sqlite_fast_path=False` writes a SQLite file through SQLAlchemy Core statements,
        as PostgreSQL is written, instead of raw sqlite3 ones (see writes.py): same rows."""
        self.engine = engine
        self._dialect = engine.dialect.name
        self._write_engine = engine.execution_options(**{db.WRITE: True})
        # A SQLite file is written from one thread of our own, a transaction per hop (see
        # SqliteWriter); PostgreSQL (and an in-memory SQLite) through the async engine.
        self._writer = (SqliteWriter(engine.url, fast_path=sqlite_fast_path)
                        if db.sqlite_file(engine.url) else None)
        # SQLite has one writer at a time anyway; queueing here is cheaper than busy-waiting.
        self._write_lock: asyncio.Lock | contextlib.nullcontext[None] = (
            asyncio.Lock() if self._dialect == "sqlite" else contextlib.nullcontext())

    @property
    def write_engine(self) -> Engine:
        """The synchronous engine that write transactions run on (for event listeners).

        On a SQLite file's fast path only its pool events ("connect") fire: the statements run
        on the raw sqlite3 connection, not through SQLAlchemy.
        """
        return self._writer.engine if self._writer is not None else self.engine.sync_engine

    async def close(self) -> None:
        """Stop the SQLite writer thread and close its connection; the engine is the caller's."""
        if self._writer is not None:
            await self._writer.close()

    # ---- writing -------------------------------------------------------------------------

    async def persist(self, message: Message) -> PersistResult:
        """Store one routed message; a repeated idempotency key is a no-op (`duplicate=True`)."""
        return (await self.persist_many([message]))[0]

    async def persist_many(self, messages: Sequence[Message]) -> list[PersistResult]:
        """Store a batch in ONE transaction; results in the order of `messages`."""
        if not messages:
            return []
        last: BaseException | None = None
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                async with self._write_lock:
                    return await self._in_transaction(messages)
            except sa_exc.IntegrityError as exc:
                # Another writer committed the same idempotency key or a new identity first.
                last = exc
                log.info("persist_conflicted", attempt=attempt, error=str(exc.orig))
            except sa_exc.DBAPIError as exc:
                if (_sqlstate(exc) or "") in RETRYABLE_SQLSTATES:
                    last = exc
                    continue
                if storage_unavailable(exc):
                    raise StorageUnavailable(f"database unavailable: {exc.orig}") from exc
                raise
            except (OSError, TimeoutError, sa_exc.SQLAlchemyError) as exc:
                if storage_unavailable(exc):
                    raise StorageUnavailable(f"database unavailable: {exc}") from exc
                raise
        raise StorageUnavailable(f"conflicting writers, gave up after {WRITE_ATTEMPTS} attempts: "
                                 f"{last}") from last

    async def _in_transaction(self, messages: Sequence[Message]) -> list[PersistResult]:
        """The batch in one write transaction, committed if planning and writing succeed."""
        def persist(statements: WriteStatements) -> list[PersistResult]:
            return self._persist_batch(statements, messages)

        if self._writer is not None:
            return await self._writer.run(persist)
        async with self._write_engine.begin() as connection:
            return await connection.run_sync(
                lambda sync: persist(CoreWriteStatements(sync)))

    def _persist_batch(self, statements: WriteStatements,
                       messages: Sequence[Message]) -> list[PersistResult]:
        now = utcnow()
        plan = _Plan(results=[None] * len(messages))

        # 1. Load: which keys are stored already (and which message ids are taken).
        keys = {m.idempotency_key for m in messages}
        ids = {str(m.id) for m in messages}
        stored: dict[str, PersistResult] = {}
        taken_ids: set[str] = set()
        rows = statements.stored_messages(sorted(keys), sorted(ids))
        for message_id, key, ticket_id, customer_id, ticket_number in rows:
            taken_ids.add(message_id)
            if key in stored or key not in keys:
                continue
            stored[key] = PersistResult(
                ticket_id=ticket_id, ticket_number=ticket_number, message_id=message_id,
                customer_id=customer_id, created_ticket=False, duplicate=True)

        fresh: list[Message] = []
        seen: set[str] = set()
        for m in messages:
            if m.idempotency_key not in stored and m.idempotency_key not in seen:
                seen.add(m.idempotency_key)
                fresh.append(m)

        known = self._load_identities(statements, fresh)
        threads = _ThreadIndex.load(statements, fresh, known)

        # 2. Plan, message by message.
        batch_first: dict[str, int] = {}
        for index, m in enumerate(messages):
            key = m.idempotency_key
            if key in stored:
                plan.results[index] = stored[key]
                continue
            if key in batch_first:
                continue  # filled in after allocation from the first occurrence
            batch_first[key] = index
            self._plan_message(plan, index, m, now, known, threads, taken_ids)

        # 3. Write, parents before children.
        self._write(statements, plan, now)

        for index, ref, message_id, customer_id, created in plan.pending:
            plan.results[index] = PersistResult(
                ticket_id=ref.id if ref else None, ticket_number=ref.number if ref else None,
                message_id=message_id, customer_id=customer_id, created_ticket=created,
                duplicate=False)
        for index, m in enumerate(messages):
            if plan.results[index] is None:
                first = plan.results[batch_first[m.idempotency_key]]
                assert first is not None
                plan.results[index] = PersistResult(
                    ticket_id=first.ticket_id, ticket_number=first.ticket_number,
                    message_id=first.message_id, customer_id=first.customer_id,
                    created_ticket=False, duplicate=True)
        return [r for r in plan.results if r is not None]

    def _load_identities(self, statements: WriteStatements,
                         messages: Iterable[Message]) -> dict[tuple[str, str], _Known]:
        pairs = {(i.kind, normalize_identity(i.kind, i.value))
                 for m in messages for i in m.sender.identities}
        if not pairs:
            return {}
        return {(kind, value): _Known(customer_id, verified, created_at)
                for kind, value, customer_id, verified, created_at
                in statements.known_identities(sorted(pairs))}

    def _plan_message(self, plan: _Plan, index: int, m: Message, now: datetime,
                      known: dict[tuple[str, str], _Known], threads: _ThreadIndex,
                      taken_ids: set[str]) -> None:
        # The customer: the oldest one owning any of the sender's identities, else a new one.
        claims: dict[tuple[str, str], bool] = {}
        for identity in m.sender.identities:
            pair = (identity.kind, normalize_identity(identity.kind, identity.value))
            claims[pair] = claims.get(pair, False) or identity.verified
        owners = [known[pair] for pair in claims if pair in known]
        if owners:
            owner = min(owners, key=lambda k: (k.customer_created_at, k.customer_id))
            customer_id, customer_created_at, target = (
                owner.customer_id, owner.customer_created_at, plan.identities_added)
        else:
            customer_id, customer_created_at, target = (
                str(uuid.uuid4()), now, plan.identities_new)
            plan.customers.append({"id": customer_id, "name": m.sender.name,
                                   "created_at": customer_created_at, "updated_at": now})
        for pair, verified in claims.items():
            existing = known.get(pair)
            if existing is None:
                # Only identities nobody owns are added: an identity is never taken away.
                target.append({"customer_id": customer_id, "kind": pair[0], "value": pair[1],
                               "verified": verified, "created_at": now})
                known[pair] = _Known(customer_id, verified, customer_created_at)
            elif verified and not existing.verified:
                plan.verify.add(pair)
                existing.verified = True

        # The ticket: one the thread hints name, else a new one. Events never open one.
        ticket: _TicketRef | None = None
        created = False
        if m.kind != "event":
            ticket = threads.find(m, customer_id)
            if ticket is None:
                ticket = self._plan_ticket(plan, m, customer_id)
                created = True
            else:
                if ticket.status in REOPENED_BY_CUSTOMER:
                    ticket.status = "open"
                if not ticket.new:
                    plan.touched[ticket.id] = ticket
            threads.remember(m, customer_id, ticket)

        message_id = str(m.id)
        if message_id in taken_ids:
            message_id = str(uuid.uuid4())  # the producer reused an id for another key
        taken_ids.add(message_id)
        channel_data = m.channel_data or None
        reference = channel_data.get("reference") if channel_data else None
        thread = m.thread
        plan.messages.append({
            "id": message_id,
            "ticket_id": ticket.id if ticket else None,
            "customer_id": customer_id,
            "direction": "in",
            "kind": m.kind,
            "channel": m.channel,
            "account": m.account,
            "subject": m.subject,
            "text": m.text,
            "html": m.html,
            "flags": list(m.flags),
            "form": m.form.model_dump(mode="json") if m.form else None,
            "call": m.call.model_dump(mode="json", by_alias=True) if m.call else None,
            "event": m.event.model_dump(mode="json") if m.event else None,
            "channel_data": channel_data,
            "thread": thread.model_dump(mode="json", exclude_defaults=True) if thread else None,
            "idempotency_key": m.idempotency_key,
            "message_id": thread.message_id if thread else None,
            "reference": str(reference)[:128] if reference is not None else None,
            "occurred_at": m.occurred_at,
            "received_at": m.received_at,
            "persisted_at": now,
            "raw": m.raw,
            "trace_id": m.trace_id,
            "sender_name": m.sender.name,
        })
        for a in m.attachments:
            plan.attachments.append({
                "message_id": message_id, "filename": a.filename,
                "original_filename": a.original_filename, "content_type": a.content_type,
                "size": a.size, "sha256": a.sha256, "blob": a.blob,
                "content_id": a.content_id, "inline": a.inline})
        plan.pending.append((index, ticket, message_id, customer_id, created))

    def _plan_ticket(self, plan: _Plan, m: Message, customer_id: str) -> _TicketRef:
        route = m.route
        desk = skill_group = category = None
        priority = "normal"
        tags: list[str] = []
        if route is not None:
            owner = next((d for d in route.deliveries if d.role in OWNING_ROLES),
                         route.deliveries[0])
            desk, skill_group = owner.desk, owner.skill_group
            priority, category, tags = route.priority, route.category, list(route.tags)
        subject = m.subject or (m.thread.subject if m.thread else None) or _first_line(m.text)
        # Each ticket its own instant, so newest-first lists keep a batch in arrival order.
        created_at = utcnow()
        ref = _TicketRef(id=str(uuid.uuid4()), number=None, status="new",
                         customer_id=customer_id, channel=m.channel, new=True)
        plan.tickets.append({
            "id": ref.id, "number": None, "channel": m.channel, "account": m.account,
            "desk": desk, "skill_group": skill_group, "status": "new", "priority": priority,
            "category": category, "tags": tags, "subject": subject,
            "customer_id": customer_id,
            "route": route.model_dump(mode="json") if route else None,
            "conversation_id": m.thread.conversation_id if m.thread else None,
            "created_at": created_at, "updated_at": created_at,
        })
        plan.new_ticket_refs.append(ref)
        return ref

    def _write(self, statements: WriteStatements, plan: _Plan, now: datetime) -> None:
        if plan.customers:
            statements.insert(CUSTOMERS, plan.customers)
        # Sorted, so two writers adding the same identities lock them in the same order.
        if plan.identities_new:
            # Plain insert: if a concurrent writer created one of them, retry and find it.
            statements.insert(IDENTITIES, _sorted(plan.identities_new))
        if plan.identities_added:
            statements.add_identities(_sorted(plan.identities_added))
        if plan.verify:
            statements.verify_identities(sorted(plan.verify))
        if plan.tickets:
            # Allocated last-but-one: on PostgreSQL the counter row stays locked until commit.
            numbers = self._allocate_numbers(statements, len(plan.tickets))
            for row, ref, number in zip(plan.tickets, plan.new_ticket_refs, numbers,
                                        strict=True):
                row["number"] = ref.number = number
                row["status"] = ref.status
            statements.insert(TICKETS, plan.tickets)
        if plan.messages:
            statements.insert(MESSAGES, plan.messages)
        if plan.attachments:
            statements.insert(ATTACHMENTS, plan.attachments)
        if plan.touched:
            statements.touch_tickets(
                [(ref.id, ref.status, now)
                 for ref in sorted(plan.touched.values(), key=lambda r: r.id)])

    def _allocate_numbers(self, statements: WriteStatements, count: int) -> list[int]:
        last = statements.bump_ticket_counter(count)
        if last is None:  # a schema made without the migration's seed row
            last = db.FIRST_TICKET_NUMBER - 1 + count
            statements.insert(COUNTERS, [{"name": db.TICKET_COUNTER, "value": last}])
        return list(range(last - count + 1, last + 1))

    # ---- reading -------------------------------------------------------------------------

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
        query = _filtered(select(TICKETS), filters or TicketFilter())
        if cursor:
            created_at, ticket_id = decode_cursor(cursor)
            query = query.where(or_(
                TICKETS.c.created_at < created_at,
                and_(TICKETS.c.created_at == created_at, TICKETS.c.id < ticket_id)))
        query = query.order_by(TICKETS.c.created_at.desc(), TICKETS.c.id.desc()).limit(limit + 1)
        async with self._reading() as conn:
            rows = (await conn.execute(query)).all()
        items = [_ticket_view(row) for row in rows[:limit]]
        following = None
        if len(rows) > limit:
            following = encode_cursor(items[-1].created_at, items[-1].id)
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
            row = (await conn.execute(select(TICKETS).where(condition))).first()
            if row is None:
                return None
            messages = (await conn.execute(
                select(MESSAGES).where(MESSAGES.c.ticket_id == row.id)
                .order_by(func.coalesce(MESSAGES.c.occurred_at, MESSAGES.c.received_at),
                          MESSAGES.c.received_at, MESSAGES.c.persisted_at, MESSAGES.c.id)
            )).all()
            attachments = await self._attachments(conn, [m.id for m in messages])
        return TicketDetail(**_ticket_view(row).model_dump(),
                            messages=[_message_view(m, attachments.get(m.id, []))
                                      for m in messages])

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

    async def customer_timeline(self, customer_id: str) -> list[MessageView]:
        """Every message of a customer, tickets and events alike, in source order."""
        async with self._reading() as conn:
            messages = (await conn.execute(
                select(MESSAGES).where(MESSAGES.c.customer_id == customer_id)
                .order_by(func.coalesce(MESSAGES.c.occurred_at, MESSAGES.c.received_at),
                          MESSAGES.c.received_at, MESSAGES.c.id))).all()
            attachments = await self._attachments(conn, [m.id for m in messages])
        return [_message_view(m, attachments.get(m.id, [])) for m in messages]

    async def get_customer(self, customer_id: str) -> CustomerView | None:
        customers = await self._customers(CUSTOMERS.c.id == customer_id)
        return customers[0] if customers else None

    async def find_customers(self, kind: str, value: str) -> list[CustomerView]:
        """Customers owning the identity `kind:value` (at most one, by the unique constraint)."""
        owners = select(IDENTITIES.c.customer_id).where(
            IDENTITIES.c.kind == kind, IDENTITIES.c.value == normalize_identity(kind, value))
        return await self._customers(CUSTOMERS.c.id.in_(owners.scalar_subquery()))

    async def _customers(self, condition: Any) -> list[CustomerView]:
        async with self._reading() as conn:
            customers = (await conn.execute(
                select(CUSTOMERS).where(condition)
                .order_by(CUSTOMERS.c.created_at, CUSTOMERS.c.id))).all()
            if not customers:
                return []
            identities = (await conn.execute(
                select(IDENTITIES)
                .where(IDENTITIES.c.customer_id.in_([c.id for c in customers]))
                .order_by(IDENTITIES.c.id))).all()
        by_customer: dict[str, list[IdentityView]] = {}
        for i in identities:
            by_customer.setdefault(i.customer_id, []).append(
                IdentityView(kind=i.kind, value=i.value, verified=i.verified))
        return [CustomerView(id=c.id, name=c.name, identities=by_customer.get(c.id, []),
                             created_at=c.created_at, updated_at=c.updated_at)
                for c in customers]


class _ThreadIndex:
    """Where a message's thread hints lead: tickets loaded for the batch plus the ones it adds."""

    def __init__(self) -> None:
        self.by_id: dict[str, _TicketRef] = {}
        self.by_number: dict[int, _TicketRef] = {}
        self.by_message_id: dict[str, _TicketRef] = {}
        self.by_conversation: dict[tuple[str, str], _TicketRef] = {}
        self.latest_open: dict[tuple[str, str], _TicketRef] = {}

    @classmethod
    def load(cls, statements: WriteStatements, messages: Sequence[Message],
             known: dict[tuple[str, str], _Known]) -> _ThreadIndex:
        index = cls()
        hinted = [m.thread for m in messages if m.kind != "event" and m.thread is not None]
        ticket_ids = {t.ticket_id for t in hinted if t.ticket_id}
        numbers = {n for t in hinted if (n := parse_ticket_number(t.ticket_number)) is not None}
        message_ids = {ref for t in hinted for ref in (t.in_reply_to, *t.references) if ref}
        conversations = {t.conversation_id for t in hinted if t.conversation_id}
        joiners = {known[(i.kind, normalize_identity(i.kind, i.value))].customer_id
                   for m in messages if m.kind != "event" and m.thread is not None
                   and m.thread.join_latest_open for i in m.sender.identities
                   if (i.kind, normalize_identity(i.kind, i.value)) in known}

        if ticket_ids or numbers:
            for row in statements.tickets_named(sorted(ticket_ids), sorted(numbers)):
                index._add(row)
        if message_ids:
            for *row, message_id in statements.tickets_replied_to(sorted(message_ids)):
                # The latest stored copy of a Message-ID wins.
                index.by_message_id[message_id] = index._add(row)
        if conversations:
            for row in statements.joinable_tickets(sorted(conversations)):
                *_, channel, conversation_id = row
                index.by_conversation[(channel, conversation_id)] = index._add(row)
        if joiners:
            for row in statements.open_tickets(sorted(joiners)):
                ref = index._add(row)
                index.latest_open[(ref.customer_id, ref.channel)] = ref
        return index

    def _add(self, row: Sequence[Any]) -> _TicketRef:
        """Index a TicketRow once (several hints may lead to the same ticket)."""
        ticket_id, number, status, customer_id, channel, _conversation_id = row
        ref = self.by_id.get(ticket_id)
        if ref is None:
            ref = _TicketRef(id=ticket_id, number=number, status=status,
                             customer_id=customer_id, channel=channel)
            self.by_id[ticket_id] = ref
            self.by_number[number] = ref
        return ref

    def find(self, m: Message, customer_id: str) -> _TicketRef | None:
        t = m.thread
        if t is None:
            return None
        if t.ticket_id and t.ticket_id in self.by_id:
            return self.by_id[t.ticket_id]
        number = parse_ticket_number(t.ticket_number)
        if number is not None and number in self.by_number:
            return self.by_number[number]
        for ref in (t.in_reply_to, *reversed(t.references)):
            if ref and ref in self.by_message_id:
                return self.by_message_id[ref]
        if t.conversation_id:
            found = self.by_conversation.get((m.channel, t.conversation_id))
            if found is not None and found.status not in UNJOINABLE_STATUSES:
                return found
        if t.join_latest_open:
            found = self.latest_open.get((customer_id, m.channel))
            if found is not None and found.status not in DONE_STATUSES:
                return found
        return None

    def remember(self, m: Message, customer_id: str, ticket: _TicketRef) -> None:
        """Let later messages of the batch thread onto what this one created or joined."""
        self.by_id[ticket.id] = ticket
        if ticket.number is not None:
            self.by_number[ticket.number] = ticket
        t = m.thread
        if t is not None and t.message_id:
            self.by_message_id[t.message_id] = ticket
        if t is not None and t.conversation_id:
            self.by_conversation[(m.channel, t.conversation_id)] = ticket
        if ticket.status not in DONE_STATUSES and ticket.channel == m.channel:
            self.latest_open[(customer_id, m.channel)] = ticket


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
    if f.idempotency_key is not None:
        query = query.where(TICKETS.c.id.in_(
            select(MESSAGES.c.ticket_id).where(MESSAGES.c.idempotency_key == f.idempotency_key)
            .scalar_subquery()))
    if f.reference is not None:
        query = query.where(TICKETS.c.id.in_(
            select(MESSAGES.c.ticket_id).where(MESSAGES.c.reference == f.reference)
            .scalar_subquery()))
    return query


def _ticket_view(row: Any) -> TicketView:
    return TicketView(
        id=row.id, number=row.number, channel=row.channel, account=row.account, desk=row.desk,
        skill_group=row.skill_group, status=row.status, priority=row.priority,
        category=row.category, tags=row.tags or [], subject=row.subject,
        customer_id=row.customer_id, conversation_id=row.conversation_id, route=row.route,
        created_at=row.created_at, updated_at=row.updated_at)


def _message_view(row: Any, attachments: list[AttachmentView]) -> MessageView:
    return MessageView(
        id=row.id, ticket_id=row.ticket_id, customer_id=row.customer_id,
        direction=row.direction, kind=row.kind, channel=row.channel, account=row.account,
        subject=row.subject, text=row.text, html=row.html, flags=row.flags or [],
        attachments=attachments, call=row.call, form=row.form, event=row.event,
        reference=row.reference, sender_name=row.sender_name, occurred_at=row.occurred_at,
        received_at=row.received_at, persisted_at=row.persisted_at,
        idempotency_key=row.idempotency_key, trace_id=row.trace_id, raw=row.raw)


def _first_line(text: str, limit: int = 200) -> str | None:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:limit]
    return None


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["kind"], r["value"]))
