"""The ticket core's tables, the engine factory and the programmatic Alembic upgrade."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy import (
    true as sa_true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import URL, Connection, Engine, create_engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import DateTime, TypeDecorator

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Execution option asking for a write transaction. SQLite then opens it with BEGIN IMMEDIATE:
# a deferred transaction that reads first and writes later fails at once with SQLITE_BUSY when
# another connection committed in between (WAL snapshots cannot be upgraded), whatever the
# busy timeout; taking the write lock up front makes writers queue instead.
WRITE = "intake_write"

# The sequence of human-friendly ticket numbers lives in `counters`, bumped inside the
# transaction that creates the ticket: no gaps from rolled back transactions, no duplicates.
TICKET_COUNTER = "ticket_number"
FIRST_TICKET_NUMBER = 1001
# Event log ids come from a counter row too, for the same reason and one more: the row stays
# locked until commit, so ids become visible in order (a plain sequence hands out 7 before 8
# but may commit 8 first, and a reader that saw 8 would never see 7).
EVENT_COUNTER = "event_id"
# The last event id the relay published to intake.events.
EVENTS_RELAYED = "events_relayed"

SQLITE_BUSY_TIMEOUT_MS = 30_000


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend.

    PostgreSQL keeps `timestamptz`. SQLite has no time zones: values are stored as naive UTC
    text in one fixed format (so that text order is time order) and come back tagged UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: store aware UTC datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


Json = JSON().with_variant(JSONB(), "postgresql")
Id = String(36)
AutoId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Counter(Base):
    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    # Migration 0004: set by `PATCH /api/v1/customers/{id}`; read by the router's rules.
    vip_level: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                           server_default="0")
    language: Mapped[str | None] = mapped_column(String(35))
    fields: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # A customer merged into another stays as a tombstone naming it (merging.py, 0016).
    merged_into: Mapped[str | None] = mapped_column(Id)


class CustomerIdentity(Base):
    __tablename__ = "customer_identities"
    __table_args__ = (UniqueConstraint("kind", "value"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    customer_id: Mapped[str] = mapped_column(
        Id, ForeignKey("customers.id", ondelete="CASCADE"), nullable=False, index=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    value: Mapped[str] = mapped_column(String(512), nullable=False)
    verified: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class Ticket(Base):
    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_created_at_id", "created_at", "id"),
        Index("ix_tickets_customer_id_channel_status", "customer_id", "channel", "status"),
        Index("ix_tickets_conversation_id", "conversation_id"),
        Index("ix_tickets_desk_status", "desk", "status"),
        Index("ix_tickets_primary_ticket_id", "primary_ticket_id"),
        Index("ix_tickets_follow_up_of", "follow_up_of"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, nullable=False, unique=True)
    channel: Mapped[str] = mapped_column(String(32), nullable=False)
    account: Mapped[str] = mapped_column(String(320), nullable=False)
    desk: Mapped[str | None] = mapped_column(String(128))
    skill_group: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    priority: Mapped[str] = mapped_column(String(16), nullable=False)
    category: Mapped[str | None] = mapped_column(String(128))
    tags: Mapped[list[str]] = mapped_column(Json, nullable=False)
    subject: Mapped[str | None] = mapped_column(Text)
    customer_id: Mapped[str] = mapped_column(
        Id, ForeignKey("customers.id"), nullable=False)
    route: Mapped[dict[str, Any] | None] = mapped_column(Json)
    conversation_id: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    # Migration 0004: the decision's SLA and escalation as the ticket runs them (timers.py).
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sla: Mapped[dict[str, Any] | None] = mapped_column(Json)
    escalation: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # The customer's latest rating: {score, comment, via, answered_at, first_answered_at}.
    satisfaction: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # Migration 0006: one ticket per delivery. `role` is the delivery's; a linked ticket
    # (`copy`, `collaborator`) is internal, shows the messages of its `primary_ticket_id` (the
    # customer-facing one of its message) and is linked to it by `link_relation`, "multi" or
    # "collaborator". Not a foreign key: SQLite would rebuild the table to add one.
    role: Mapped[str] = mapped_column(String(16), nullable=False, default="owner",
                                      server_default="owner")
    customer_facing: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True,
                                                  server_default=sa_true())
    primary_ticket_id: Mapped[str | None] = mapped_column(Id)
    link_relation: Mapped[str | None] = mapped_column(String(16))
    # Migration 0007: the ticket's first-contact agent (首问负责人), who keeps read and notes
    # access after it leaves their desks (scope.py).
    first_contact_agent_id: Mapped[str | None] = mapped_column(Id, index=True)
    # Migration 0009: custom field values {key: canonical value} (fields.py).
    fields: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # Migration 0010 (lifecycle.py): bumped by every change (`If-Match` compares it); resolved
    # → open transitions; the closed ticket this one follows up; the target of a merged one.
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")
    reopened_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0,
                                                server_default="0")
    follow_up_of: Mapped[str | None] = mapped_column(Id)
    merged_into: Mapped[str | None] = mapped_column(Id)
    # Migration 0012 (assigning.py): who holds it, since when; when it entered its group's
    # queue again (NULL: since created_at).
    assignee_id: Mapped[str | None] = mapped_column(Id, index=True)
    assigned_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    waiting_since: Mapped[datetime | None] = mapped_column(UtcDateTime)


class TicketTag(Base):
    """One row per (ticket, tag), beside `tickets.tags`: `?tag=` searches this index."""

    __tablename__ = "ticket_tags"
    __table_args__ = (Index("ix_ticket_tags_tag_ticket_id", "tag", "ticket_id"),)

    ticket_id: Mapped[str] = mapped_column(
        Id, ForeignKey("tickets.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(200), primary_key=True)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_ticket_id", "ticket_id"),
        Index("ix_messages_customer_id", "customer_id"),
        Index("ix_messages_message_id", "message_id"),
        Index("ix_messages_reference", "reference"),
        Index("ix_messages_persisted_at_id", "persisted_at", "id"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    # NULL for an event: it sits on the customer's timeline and never opens a ticket.
    ticket_id: Mapped[str | None] = mapped_column(Id, ForeignKey("tickets.id"))
    customer_id: Mapped[str] = mapped_column(Id, ForeignKey("customers.id"), nullable=False)
    direction: Mapped[str] = mapped_column(String(3), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    channel: Mapped[str] = mapped_column(String(32), nullable=False)
    account: Mapped[str] = mapped_column(String(320), nullable=False)
    subject: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    html: Mapped[str | None] = mapped_column(Text)
    flags: Mapped[list[str]] = mapped_column(Json, nullable=False)
    form: Mapped[dict[str, Any] | None] = mapped_column(Json)
    call: Mapped[dict[str, Any] | None] = mapped_column(Json)
    event: Mapped[dict[str, Any] | None] = mapped_column(Json)
    channel_data: Mapped[dict[str, Any] | None] = mapped_column(Json)
    thread: Mapped[dict[str, Any] | None] = mapped_column(Json)
    idempotency_key: Mapped[str] = mapped_column(String(1024), nullable=False, unique=True)
    message_id: Mapped[str | None] = mapped_column(String(998))
    reference: Mapped[str | None] = mapped_column(String(128))
    occurred_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    persisted_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    raw: Mapped[str | None] = mapped_column(String(128))
    trace_id: Mapped[str | None] = mapped_column(String(128))
    sender_name: Mapped[str | None] = mapped_column(String(512))
    # Outbound messages only (NULL for inbound): the latest delivery result that outranks the
    # others (see delivery.py), its reason and attempt.
    delivery_status: Mapped[str | None] = mapped_column(String(16))
    delivery_reason: Mapped[str | None] = mapped_column(String(256))
    delivery_attempt: Mapped[int | None] = mapped_column(Integer)
    # Migration 0004, inbound only: the message's own decision and its sender as received
    # (`{name, identities}`), so a decision can be replayed (`GET /api/v1/decisions`).
    route: Mapped[dict[str, Any] | None] = mapped_column(Json)
    sender: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # The number of the ticket it arrived on, once a merge moved it (merging.py, 0016).
    original_ticket_number: Mapped[int | None] = mapped_column(BigInteger)


class Attachment(Base):
    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(
        Id, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False, index=True)
    filename: Mapped[str] = mapped_column(String(1024), nullable=False)
    original_filename: Mapped[str | None] = mapped_column(String(1024))
    content_type: Mapped[str] = mapped_column(String(255), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    blob: Mapped[str] = mapped_column(String(128), nullable=False)
    content_id: Mapped[str | None] = mapped_column(String(998))
    inline: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class Event(Base):
    """The append-only event log: one row per change, written in the change's transaction."""

    __tablename__ = "events"

    # From the `event_id` counter, not autoincremented (see EVENT_COUNTER).
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    desk: Mapped[str | None] = mapped_column(String(128))
    ticket_id: Mapped[str | None] = mapped_column(Id)
    customer_id: Mapped[str | None] = mapped_column(Id)
    actor: Mapped[str | None] = mapped_column(String(128))
    data: Mapped[dict[str, Any]] = mapped_column(Json, nullable=False)


class History(Base):
    """The audit history (migration 0015, history.py): one append-only row per change of a
    ticket or customer, written beside its event by `store.append_events` and keyed by that
    event's id. Nothing updates or deletes it; on PostgreSQL a trigger refuses both."""

    __tablename__ = "history"
    __table_args__ = (Index("ix_history_ticket_id_id", "ticket_id", "id"),
                      Index("ix_history_customer_id_id", "customer_id", "id"))

    # The event's id: one row per event that changes something, in commit order.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    ticket_id: Mapped[str | None] = mapped_column(Id)
    customer_id: Mapped[str | None] = mapped_column(Id)
    # `agent:<id> token:<id>`, `admin`, `system:<rule or timer>`, `customer`, `connector:<c>`.
    actor: Mapped[str] = mapped_column(String(160), nullable=False)
    action: Mapped[str] = mapped_column(String(64), nullable=False)
    before: Mapped[Any] = mapped_column(Json, nullable=True)
    after: Mapped[Any] = mapped_column(Json, nullable=True)
    trace_id: Mapped[str | None] = mapped_column(String(128))


class Outbox(Base):
    """Outbound messages committed with their message, waiting for the relay to publish them."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_published_at_id", "published_at", "id"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(
        Id, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False)
    routing_key: Mapped[str] = mapped_column(String(400), nullable=False)
    body: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


def json_dumps(value: Any) -> str:
    """The JSON text both backends store (the engines' `json_serializer`)."""
    return orjson.dumps(value).decode()


def make_engine(url: str, **options: Any) -> AsyncEngine:
    """An async engine for `sqlite+aiosqlite://…` or `postgresql+asyncpg://…`.

    SQLite connections get WAL (readers never block the writer), a busy timeout, foreign keys
    and synchronous=FULL (a commit survives a power cut: the consumer acks after it). SQLAlchemy
    issues BEGIN itself so transactions hold DDL and writes can ask for IMMEDIATE (see WRITE).
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.drivername != "sqlite+aiosqlite":
            parsed = parsed.set(drivername="sqlite+aiosqlite")
        engine = create_async_engine(parsed, json_serializer=json_dumps, **options)
        _configure_sqlite(engine.sync_engine)
        return engine
    if backend == "postgresql":
        if parsed.drivername != "postgresql+asyncpg":
            parsed = parsed.set(drivername="postgresql+asyncpg")
        options.setdefault("pool_pre_ping", True)
        options.setdefault("pool_size", 10)
        return create_async_engine(parsed, json_serializer=json_dumps, **options)
    raise ValueError(f"unsupported database URL {parsed.render_as_string(hide_password=True)}; "
                     "use sqlite+aiosqlite:///path or postgresql+asyncpg://…")


def sqlite_file(url: str | URL) -> bool:
    """Whether a SQLite URL names a file that several connections can share (not :memory:)."""
    parsed = make_url(url)
    return (parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
            and parsed.query.get("mode") != "memory")


def make_sqlite_write_engine(url: str | URL) -> Engine:
    """A synchronous engine (the stdlib sqlite3 driver) on the same file as `make_engine(url)`.

    The ticket store runs each write transaction whole on one thread with it: one hop from the
    event loop per batch instead of one per statement (`writes.SqliteWriter`, which by default
    runs the statements on the raw sqlite3 connection). Same pragmas and JSON as the async engine,
    but no "begin" listener (any engine event makes SQLAlchemy dispatch events around every
    statement): SQLAlchemy's BEGIN is a no-op here, so the caller issues `BEGIN IMMEDIATE` as
    the transaction's first statement.
    """
    parsed = make_url(url).set(drivername="sqlite+pysqlite")
    engine = create_engine(parsed, json_serializer=json_dumps)
    _sqlite_pragmas(engine)
    return engine


def _configure_sqlite(engine: Engine) -> None:
    _sqlite_pragmas(engine)

    @event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop the driver from issuing its own BEGIN; on_begin below does it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
                       "foreign_keys=ON", "synchronous=FULL"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()


def alembic_config(url: str | None = None) -> Any:
    """An Alembic `Config` built in code: no alembic.ini needed."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # configparser interpolates '%'; URL-encoded passwords contain it.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def migrate(url: str) -> None:
    """Apply every migration (`upgrade head`); creates a SQLite file's parent directory."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        await asyncio.to_thread(Path(parsed.database).parent.mkdir, parents=True, exist_ok=True)
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.execution_options(**{WRITE: True})
            async with connection.begin():
                await connection.run_sync(_upgrade)
    finally:
        await engine.dispose()


def _upgrade(connection: Connection) -> None:
    from alembic import command

    if connection.dialect.name == "postgresql":
        # Two services starting together must not both run the same migration.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7316540872)")
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


class Call(Base):
    """A phone call, keyed by (line, call id): live state, the pop, the pick and its record.

    Written by progress messages and the record (ticket_core/calls.py); the `*_at` event
    columns say which `call.*` events are in the log already, so each is written once.
    """

    __tablename__ = "calls"
    __table_args__ = (Index("ix_calls_call_id", "call_id"),)

    line: Mapped[str] = mapped_column(String(128), primary_key=True)
    call_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    state: Mapped[str] = mapped_column(String(32), nullable=False)
    direction: Mapped[str] = mapped_column(String(16), nullable=False)
    caller: Mapped[str | None] = mapped_column(String(64))
    desk: Mapped[str | None] = mapped_column(String(128))
    customer_id: Mapped[str | None] = mapped_column(Id)
    call: Mapped[dict[str, Any]] = mapped_column(Json, nullable=False)
    pop: Mapped[dict[str, Any] | None] = mapped_column(Json)
    pick: Mapped[dict[str, Any] | None] = mapped_column(Json)
    history: Mapped[list[Any]] = mapped_column(Json, nullable=False)
    ringing_event_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    answered_event_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ended_event_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    ticket_id: Mapped[str | None] = mapped_column(Id)
    message_id: Mapped[str | None] = mapped_column(Id)
    recorded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class Timer(Base):
    """A timed action (overflow, SLA warning or breach, escalation step or deadline), written
    in the transaction that plans it and fired once by a scheduler (scheduler.py)."""

    __tablename__ = "timers"
    __table_args__ = (Index("ix_timers_state_due_at", "state", "due_at"),
                      Index("ix_timers_ticket_id", "ticket_id"),
                      # An agent's reminders (migration 0013, reminders.py).
                      Index("ix_timers_kind_ref_due_at", "kind", "ref", "due_at"))

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    ticket_id: Mapped[str] = mapped_column(Id, nullable=False)
    ref: Mapped[str] = mapped_column(String(256), nullable=False)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    # pending, fired, done (its condition was met first), cancelled, overdue (a step).
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    fired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    reason: Mapped[str | None] = mapped_column(String(256))
    data: Mapped[dict[str, Any] | None] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class TicketNote(Base):
    """An agent's internal note on a ticket (notes.py): never sent, never shown to customers."""

    __tablename__ = "ticket_notes"

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    ticket_id: Mapped[str] = mapped_column(Id, ForeignKey("tickets.id"), nullable=False,
                                           index=True)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    # The agent ids the note mentions (their notifications are the agent workflow's).
    mentions: Mapped[list[str]] = mapped_column(Json, nullable=False)
    author: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class SearchDocument(Base):
    """A ticket's search document (migration 0011; search_index.py): its token stream and the
    text it came from. PostgreSQL adds `document tsvector` (GIN), SQLite the FTS5 table
    `search_fts` over `tokens`: both outside this model, made by the migration."""

    __tablename__ = "search_documents"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    ticket_id: Mapped[str] = mapped_column(Id, nullable=False, unique=True)
    tokens: Mapped[str] = mapped_column(Text, nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)


# Migrations 0007 (agents, their API tokens and notifications: agents_db.py, scope.py),
# 0013 (quick replies managed through the API: quick_replies_db.py) and 0017 (satisfaction
# requests: satisfaction_db.py).
from . import agents_db, quick_replies_db, satisfaction_db  # noqa: E402,F401  (one metadata)
