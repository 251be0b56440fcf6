"""The statements of a write transaction: the tables, the `WriteStatements` protocol, and its
SQLAlchemy Core implementation (PostgreSQL, an in-memory SQLite, a SQLite file when the fast
path is off).

`TicketStore` plans a batch in memory and runs a fixed set of statements, each a method of
`WriteStatements`. `CoreWriteStatements` runs them as SQLAlchemy Core statements, built once;
writes.py holds the same statements as raw SQLite SQL (the fast path) and the writer thread.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection

from . import db
from .schemas import DONE_STATUSES
from .search_index import reindex_connection

CUSTOMERS = db.Customer.__table__
IDENTITIES = db.CustomerIdentity.__table__
TICKETS = db.Ticket.__table__
MESSAGES = db.Message.__table__
ATTACHMENTS = db.Attachment.__table__
COUNTERS = db.Counter.__table__
EVENTS = db.Event.__table__
OUTBOX = db.Outbox.__table__
TIMERS = db.Timer.__table__
TICKET_TAGS = db.TicketTag.__table__
HISTORY = db.History.__table__
INSERTED_TABLES = (CUSTOMERS, IDENTITIES, TICKETS, MESSAGES, ATTACHMENTS, COUNTERS, EVENTS, OUTBOX,
                   TIMERS, TICKET_TAGS, HISTORY)

# A conversation stays joinable until the ticket is closed or merged away (then a message
# makes a follow-up, or goes to the merge target: threads.py).
UNJOINABLE_STATUSES = ("closed", "merged")

# What the selects return: plain tuples on the fast path, SQLAlchemy Rows (which unpack the
# same way) on the Core path.
StoredMessageRow = tuple[str, str, str | None, str, int | None]
"""id, idempotency_key, ticket_id, customer_id, the ticket's number."""
KnownIdentityRow = tuple[str, str, str, bool, datetime]
"""kind, value, customer_id, verified, the customer's created_at (aware UTC)."""
TicketRow = tuple[str, int, str, str, str | None, str, str | None]
"""id, number, status, customer_id, desk, channel, conversation_id."""
RepliedTicketRow = tuple[str, int, str, str, str | None, str, str | None, str, str, str]
"""A TicketRow, then the channel, account and stored Message-ID of the message leading to it."""
RatedTicketRow = tuple[str, int, str, str, str | None, str, str | None, dict[str, Any] | None]
"""A TicketRow, then its stored satisfaction (None when never rated)."""
LineageRow = tuple[str, int, str, str, str | None, str, str | None, str | None, str | None,
                   list[str] | None, str | None, str | None]
"""A TicketRow, then its skill_group, category, tags, merged_into and follow_up_of."""


class WriteStatements(Protocol):
    """The statements of one write transaction. Rows to insert are dicts keyed by column name.

    Lists in arguments are non-empty unless said otherwise.
    """

    def stored_messages(self, keys: Sequence[str],
                        ids: Sequence[str]) -> Iterable[StoredMessageRow]:
        """Messages stored under any of `keys`, or with any of the message `ids`."""
        ...

    def known_identities(self, pairs: Sequence[tuple[str, str]]) -> Iterable[KnownIdentityRow]:
        """The stored identities among (kind, value) `pairs`, with their customer's age."""
        ...

    def tickets_named(self, ids: Sequence[str], numbers: Sequence[int]) -> Iterable[TicketRow]:
        """Tickets by id or number (either list may be empty)."""
        ...

    def tickets_replied_to(self, message_ids: Sequence[str]) -> Iterable[RepliedTicketRow]:
        """Tickets holding a message with one of these Message-IDs, oldest message first."""
        ...

    def conversation_tickets(self, conversations: Sequence[str]) -> Iterable[TicketRow]:
        """Customer-facing tickets of these conversation ids, any status, oldest first."""
        ...

    def ticket_lineage(self, ids: Sequence[str]) -> Iterable[LineageRow]:
        """These tickets, and the follow-ups of them not closed or merged (oldest first):
        where a message to a closed or merged ticket goes (threads.py)."""
        ...

    def cancel_timers(self, ticket_ids: Sequence[str], kinds: Sequence[str],
                      reason: str) -> None:
        """Cancel the pending timers of these kinds on these tickets."""
        ...

    def open_tickets(self, customer_ids: Sequence[str]) -> Iterable[TicketRow]:
        """Tickets of these customers not resolved, closed or merged, oldest first."""
        ...

    def rated_tickets(self, conversations: Sequence[str]) -> Iterable[RatedTicketRow]:
        """Tickets of these conversation ids a rating may land on (not merged), oldest
        first, with their satisfaction."""
        ...

    def set_satisfaction(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Set (ticket id, satisfaction) on rated tickets."""
        ...

    def insert(self, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        """Plain inserts: a unique conflict raises IntegrityError."""
        ...

    def add_identities(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert identities, leaving alone any (kind, value) stored meanwhile."""
        ...

    def verify_identities(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Mark these stored identities verified."""
        ...

    def bump_counter(self, name: str, count: int) -> int | None:
        """Add `count` to the counter row `name`: its new value, None if the row is missing."""
        ...

    def lock_planned(self, ticket_ids: Sequence[str], customer_ids: Sequence[str]) -> list[str]:
        """Lock the stored customers a batch writes for and the stored tickets it appends to
        (either list may be empty; customers first, each in id order), and name those a
        concurrent merge changed after the plan read them (`ticket <id>`, `customer <id>`):
        the batch must plan again (store.PlanStale). PostgreSQL only: SQLite writes one
        transaction at a time (`BEGIN IMMEDIATE`), so what the plan read is still there (an
        empty list)."""
        ...

    def touch_tickets(self, changes: Sequence[tuple[str, str, datetime, int]]) -> None:
        """Set (ticket id, status, updated_at, reopens to add) on tickets a batch appended
        to; each one's version goes up by one."""
        ...

    def index_tickets(self, ticket_ids: Sequence[str], customer_ids: Sequence[str]) -> None:
        """Rebuild the search documents of these tickets and of these customers' tickets
        (search_index.py; either list may be empty)."""
        ...


# ---- SQLAlchemy Core (PostgreSQL) ----------------------------------------------------------

# Built once: a batch then builds no SQL expression and SQLAlchemy reuses their memoized cache
# keys and compiled forms. Lists go in as expanding parameters.
_TICKET_COLUMNS = (TICKETS.c.id, TICKETS.c.number, TICKETS.c.status, TICKETS.c.customer_id,
                   TICKETS.c.desk, TICKETS.c.channel, TICKETS.c.conversation_id)
_STORED_KEYS = (
    select(MESSAGES.c.id, MESSAGES.c.idempotency_key, MESSAGES.c.ticket_id,
           MESSAGES.c.customer_id, TICKETS.c.number)
    .select_from(MESSAGES.outerjoin(TICKETS, TICKETS.c.id == MESSAGES.c.ticket_id))
    .where(or_(MESSAGES.c.idempotency_key.in_(bindparam("keys", expanding=True)),
               MESSAGES.c.id.in_(bindparam("ids", expanding=True)))))


@functools.cache
def _identities_clause(kinds: int) -> ColumnElement[bool]:
    """`(kind = :k0 AND value IN :v0) OR …`, a term per kind: the (kind, value) unique index
    is searched for each pair, where `(kind, value) IN (VALUES …)` made SQLite scan the table
    (see `_identities_condition`, the fast path's form). Built once per number of kinds."""
    return or_(*(and_(IDENTITIES.c.kind == bindparam(f"k{i}"),
                      IDENTITIES.c.value.in_(bindparam(f"v{i}", expanding=True)))
                 for i in range(kinds)))


def _identities_parameters(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    values_by_kind: dict[str, list[str]] = {}
    for kind, value in pairs:
        values_by_kind.setdefault(kind, []).append(value)
    parameters: dict[str, Any] = {}
    for i, (kind, values) in enumerate(values_by_kind.items()):
        parameters[f"k{i}"] = kind
        parameters[f"v{i}"] = values
    return parameters


@functools.cache
def _known_identities(kinds: int) -> Select[Any]:
    return (select(IDENTITIES.c.kind, IDENTITIES.c.value, IDENTITIES.c.customer_id,
                   IDENTITIES.c.verified, CUSTOMERS.c.created_at)
            .select_from(IDENTITIES.join(CUSTOMERS, CUSTOMERS.c.id == IDENTITIES.c.customer_id))
            .where(_identities_clause(kinds)))


@functools.cache
def _verify_identities(kinds: int) -> Update:
    return (update(IDENTITIES)
            .where(_identities_clause(kinds), IDENTITIES.c.verified.is_(False))
            .values(verified=True))


# Only the lists given: next to an empty `IN ()`, SQLite scans the table.
# A linked ticket (a copy, a collaborator's) is internal: no thread hint leads a customer's
# message to it, only to the customer-facing ticket it is linked to.
_CUSTOMER_FACING = TICKETS.c.primary_ticket_id.is_(None)
_TICKETS_NAMED = {
    (True, False): select(*_TICKET_COLUMNS).where(
        TICKETS.c.id.in_(bindparam("ids", expanding=True)), _CUSTOMER_FACING),
    (False, True): select(*_TICKET_COLUMNS).where(
        TICKETS.c.number.in_(bindparam("numbers", expanding=True)), _CUSTOMER_FACING),
    (True, True): select(*_TICKET_COLUMNS).where(
        or_(TICKETS.c.id.in_(bindparam("ids", expanding=True)),
            TICKETS.c.number.in_(bindparam("numbers", expanding=True))), _CUSTOMER_FACING),
}
_TICKETS_BY_MESSAGE_ID = (
    select(*_TICKET_COLUMNS, MESSAGES.c.channel, MESSAGES.c.account, MESSAGES.c.message_id)
    .select_from(MESSAGES.join(TICKETS, TICKETS.c.id == MESSAGES.c.ticket_id))
    .where(MESSAGES.c.message_id.in_(bindparam("message_ids", expanding=True)))
    .order_by(MESSAGES.c.persisted_at))
_TICKETS_BY_CONVERSATION = (
    select(*_TICKET_COLUMNS)
    .where(TICKETS.c.conversation_id.in_(bindparam("conversations", expanding=True)),
           _CUSTOMER_FACING)
    .order_by(TICKETS.c.created_at, TICKETS.c.id))
_TICKET_LINEAGE = (
    select(*_TICKET_COLUMNS, TICKETS.c.skill_group, TICKETS.c.category, TICKETS.c.tags,
           TICKETS.c.merged_into, TICKETS.c.follow_up_of)
    .where(or_(TICKETS.c.id.in_(bindparam("ids", expanding=True)),
               and_(TICKETS.c.follow_up_of.in_(bindparam("ids", expanding=True)),
                    TICKETS.c.status.not_in(UNJOINABLE_STATUSES))))
    .order_by(TICKETS.c.created_at, TICKETS.c.id))
_CANCEL_TIMERS = (
    update(TIMERS).where(TIMERS.c.ticket_id.in_(bindparam("ticket_ids", expanding=True)),
                         TIMERS.c.kind.in_(bindparam("kinds", expanding=True)),
                         TIMERS.c.state == "pending")
    .values(state="cancelled", reason=bindparam("reason")))
_TICKETS_OPEN_FOR = (
    select(*_TICKET_COLUMNS)
    .where(TICKETS.c.customer_id.in_(bindparam("customers", expanding=True)),
           TICKETS.c.status.not_in(DONE_STATUSES), _CUSTOMER_FACING)
    .order_by(TICKETS.c.created_at, TICKETS.c.id))
_TICKETS_RATED = (
    select(*_TICKET_COLUMNS, TICKETS.c.satisfaction)
    .where(TICKETS.c.conversation_id.in_(bindparam("conversations", expanding=True)),
           TICKETS.c.status != "merged", _CUSTOMER_FACING)
    .order_by(TICKETS.c.created_at, TICKETS.c.id))
_SET_SATISFACTION = (
    update(TICKETS).where(TICKETS.c.id == bindparam("b_id"))
    .values(satisfaction=bindparam("b_satisfaction", type_=TICKETS.c.satisfaction.type),
            version=TICKETS.c.version + 1))
_INSERTS = {table.name: insert(table) for table in INSERTED_TABLES}
# Identities added to a found customer: one a concurrent writer added first is left alone.
_INSERT_IDENTITIES_IGNORING_PG = (
    pg_insert(IDENTITIES).on_conflict_do_nothing(index_elements=["kind", "value"]))
_INSERT_IDENTITIES_IGNORING_SQLITE = (
    sqlite_insert(IDENTITIES).on_conflict_do_nothing(index_elements=["kind", "value"]))
_TOUCH_TICKETS = (
    update(TICKETS).where(TICKETS.c.id == bindparam("b_id"))
    .values(status=bindparam("b_status"), updated_at=bindparam("b_updated_at"),
            reopened_count=TICKETS.c.reopened_count + bindparam(
                "b_reopened", type_=TICKETS.c.reopened_count.type),
            version=TICKETS.c.version + 1))
# A merge locks these rows FOR UPDATE: it waits for the batch (and moves what it wrote), or
# the batch waits for it and sees the merge. The locks are the ones the batch takes anyway,
# only earlier and in id order: FOR NO KEY UPDATE as its touch of the tickets, FOR KEY SHARE
# as its foreign keys to the customers.
_LOCK_APPENDED = (
    select(TICKETS.c.id, TICKETS.c.status)
    .where(TICKETS.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(TICKETS.c.id).with_for_update(key_share=True))
_LOCK_CUSTOMERS = (
    select(CUSTOMERS.c.id, CUSTOMERS.c.merged_into)
    .where(CUSTOMERS.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(CUSTOMERS.c.id).with_for_update(key_share=True, read=True))
_BUMP_COUNTER = (
    update(COUNTERS).where(COUNTERS.c.name == bindparam("counter"))
    .values(value=COUNTERS.c.value + bindparam("count", type_=COUNTERS.c.value.type))
    .returning(COUNTERS.c.value))


class CoreWriteStatements:
    """WriteStatements on a SQLAlchemy connection: PostgreSQL, an in-memory SQLite, and a
    SQLite file when the store is made with `sqlite_fast_path=False`."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._insert_identities_ignoring = (
            _INSERT_IDENTITIES_IGNORING_PG if connection.dialect.name == "postgresql"
            else _INSERT_IDENTITIES_IGNORING_SQLITE)

    def stored_messages(self, keys: Sequence[str],
                        ids: Sequence[str]) -> Iterable[StoredMessageRow]:
        return self._connection.execute(_STORED_KEYS, {"keys": keys, "ids": ids})

    def known_identities(self, pairs: Sequence[tuple[str, str]]) -> Iterable[KnownIdentityRow]:
        parameters = _identities_parameters(pairs)
        return self._connection.execute(_known_identities(len(parameters) // 2), parameters)

    def tickets_named(self, ids: Sequence[str], numbers: Sequence[int]) -> Iterable[TicketRow]:
        if not ids and not numbers:
            return []
        parameters: dict[str, Any] = {}
        if ids:
            parameters["ids"] = ids
        if numbers:
            parameters["numbers"] = numbers
        return self._connection.execute(_TICKETS_NAMED[bool(ids), bool(numbers)], parameters)

    def tickets_replied_to(self, message_ids: Sequence[str]) -> Iterable[RepliedTicketRow]:
        return self._connection.execute(_TICKETS_BY_MESSAGE_ID, {"message_ids": message_ids})

    def conversation_tickets(self, conversations: Sequence[str]) -> Iterable[TicketRow]:
        return self._connection.execute(_TICKETS_BY_CONVERSATION,
                                        {"conversations": conversations})

    def ticket_lineage(self, ids: Sequence[str]) -> Iterable[LineageRow]:
        return self._connection.execute(_TICKET_LINEAGE, {"ids": ids})

    def cancel_timers(self, ticket_ids: Sequence[str], kinds: Sequence[str],
                      reason: str) -> None:
        self._connection.execute(_CANCEL_TIMERS, {"ticket_ids": ticket_ids, "kinds": kinds,
                                                  "reason": reason})

    def open_tickets(self, customer_ids: Sequence[str]) -> Iterable[TicketRow]:
        return self._connection.execute(_TICKETS_OPEN_FOR, {"customers": customer_ids})

    def rated_tickets(self, conversations: Sequence[str]) -> Iterable[RatedTicketRow]:
        return self._connection.execute(_TICKETS_RATED, {"conversations": conversations})

    def set_satisfaction(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        self._connection.execute(_SET_SATISFACTION, [
            {"b_id": ticket_id, "b_satisfaction": satisfaction}
            for ticket_id, satisfaction in changes])

    def insert(self, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        self._connection.execute(_INSERTS[table.name], rows)

    def add_identities(self, rows: Sequence[dict[str, Any]]) -> None:
        self._connection.execute(self._insert_identities_ignoring, rows)

    def verify_identities(self, pairs: Sequence[tuple[str, str]]) -> None:
        parameters = _identities_parameters(pairs)
        self._connection.execute(_verify_identities(len(parameters) // 2), parameters)

    def bump_counter(self, name: str, count: int) -> int | None:
        return self._connection.execute(
            _BUMP_COUNTER, {"counter": name, "count": count}).scalar_one_or_none()

    def lock_planned(self, ticket_ids: Sequence[str], customer_ids: Sequence[str]) -> list[str]:
        if self._connection.dialect.name != "postgresql":
            return []  # one write transaction at a time: nothing moved under the plan
        stale = []
        # Customers before tickets, as every writer of both takes them (a customer's change,
        # a customer merge), so that none waits on another in a circle.
        if customer_ids:
            stale += [f"customer {customer_id}" for customer_id, merged_into in
                      self._connection.execute(_LOCK_CUSTOMERS, {"ids": customer_ids})
                      if merged_into is not None]
        if ticket_ids:
            # Merged only: a rating may land on a closed ticket (rated_tickets), and a close
            # racing a customer's message is the life cycle's business, not a merge's.
            stale += [f"ticket {ticket_id}" for ticket_id, status in self._connection.execute(
                _LOCK_APPENDED, {"ids": ticket_ids}) if status == "merged"]
        return stale

    def touch_tickets(self, changes: Sequence[tuple[str, str, datetime, int]]) -> None:
        self._connection.execute(_TOUCH_TICKETS, [
            {"b_id": ticket_id, "b_status": status, "b_updated_at": updated_at,
             "b_reopened": reopened}
            for ticket_id, status, updated_at, reopened in changes])

    def index_tickets(self, ticket_ids: Sequence[str], customer_ids: Sequence[str]) -> None:
        reindex_connection(self._connection, ticket_ids, customer_ids)
