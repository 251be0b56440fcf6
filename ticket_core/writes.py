"""The fast write path for a SQLite file: the statements as raw sqlite3 SQL, and the writer thread.

`SqliteWriteStatements` implements `WriteStatements` (statements.py) on the stdlib sqlite3
connection: the same statements written out as SQL, with the values converted here exactly as
SQLAlchemy would store them (`_sqlite_conversion`), so the rows, and what the readers (still
SQLAlchemy) get back, are the same either way; sqlite3's exceptions are wrapped as SQLAlchemy
wraps them. Why: per statement SQLAlchemy sets up an execution context, expands IN lists and
runs a type processor per value, and a batch runs ten or so statements: on a small batch that
was most of the ticket core's CPU per message. `SqliteWriter` runs each batch whole on a thread
of its own. (The names of statements.py are re-exported here for older imports.)
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import JSON, BigInteger, Boolean, Integer, String, Table, Text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import PoolProxiedConnection

from . import db
from .schemas import DONE_STATUSES
from .search_index import reindex
from .statements import (
    ATTACHMENTS,
    COUNTERS,
    CUSTOMERS,
    EVENTS,
    IDENTITIES,
    INSERTED_TABLES,
    MESSAGES,
    OUTBOX,
    TICKETS,
    UNJOINABLE_STATUSES,
    CoreWriteStatements,
    KnownIdentityRow,
    LineageRow,
    RatedTicketRow,
    RepliedTicketRow,
    StoredMessageRow,
    TicketRow,
    WriteStatements,
)

__all__ = ["ATTACHMENTS", "COUNTERS", "CUSTOMERS", "EVENTS", "IDENTITIES", "INSERTED_TABLES",
           "MESSAGES", "OUTBOX", "TICKETS", "UNJOINABLE_STATUSES", "CoreWriteStatements",
           "SqliteWriteStatements", "SqliteWriter", "WriteStatements"]

T = TypeVar("T")


# ---- raw sqlite3 (SQLite files) -----------------------------------------------------------

def _sqlite_datetime(value: datetime | None) -> str | None:
    """A `db.UtcDateTime` as SQLAlchemy stores it in SQLite: naive UTC text, always with
    microseconds ('2025-03-01 01:30:15.000000'), so that text order is time order."""
    if value is None:
        return None
    if value.tzinfo is None:  # as UtcDateTime.process_bind_param refuses it
        raise ValueError("naive datetime: store aware UTC datetimes only")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _from_sqlite_datetime(text: str) -> datetime:
    """What SQLAlchemy reads back from `_sqlite_datetime`'s text: an aware UTC datetime."""
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_boolean(value: bool | None) -> int | None:
    """SQLite has no BOOLEAN: SQLAlchemy stores 0 and 1."""
    return None if value is None else int(value)


def _sqlite_conversion(table: Table, column: str) -> Callable[[Any], Any] | None:
    """How a Python value of `table.column` becomes what SQLAlchemy stores; None: as it is."""
    column_type = table.c[column].type
    if isinstance(column_type, db.UtcDateTime):
        return _sqlite_datetime
    if isinstance(column_type, JSON):
        # None too: SQLAlchemy stores the JSON text 'null', not NULL (JSON.none_as_null).
        return db.json_dumps
    if isinstance(column_type, Boolean):
        return _sqlite_boolean
    if isinstance(column_type, String | Integer | BigInteger | Text):
        return None
    raise TypeError(f"{table.name}.{column}: no SQLite conversion for {column_type!r}")


@dataclass(frozen=True, slots=True)
class _SqliteInsert:
    """An INSERT into one table: its SQL and how a planned row becomes its parameters."""

    sql: str
    columns: tuple[str, ...]
    conversions: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, conversion)
    # What a column missing from a planned row gets: its scalar default (as SQLAlchemy's
    # insert would fill in), else None (NULL).
    defaults: tuple[Any, ...]

    @classmethod
    def of(cls, table: Table, suffix: str = "") -> _SqliteInsert:
        # Every column but an autoincrementing id, as SQLAlchemy's insert with these rows.
        columns = tuple(c.name for c in table.columns if c is not table.autoincrement_column)
        conversions = tuple((position, conversion) for position, column in enumerate(columns)
                            if (conversion := _sqlite_conversion(table, column)) is not None)
        sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) "
               f"VALUES ({_marks(len(columns))}){suffix}")
        defaults = tuple(_scalar_default(table, column) for column in columns)
        return cls(sql, columns, conversions, defaults)

    def parameters(self, row: dict[str, Any]) -> tuple[Any, ...]:
        try:
            values = [row[column] for column in self.columns]
        except KeyError:  # a column the row leaves out (one added by a later migration)
            values = [row.get(column, default)
                      for column, default in zip(self.columns, self.defaults, strict=True)]
        for position, conversion in self.conversions:
            values[position] = conversion(values[position])
        return tuple(values)


def _scalar_default(table: Table, column: str) -> Any:
    default = table.c[column].default
    return default.arg if default is not None and default.is_scalar else None


@functools.cache
def _marks(count: int) -> str:
    """'?, ?, ?': the placeholders of an IN list."""
    return ", ".join("?" * count)


def _identities_condition(pairs: Sequence[tuple[str, str]]) -> tuple[str, list[str]]:
    """`(kind = ? AND value IN (?, …)) OR …`, a term per kind, and its parameters.

    The Core statements' `(kind, value) IN (VALUES …)` makes SQLite (3.40) scan the whole
    table once there are two pairs or more; this form searches the (kind, value) unique index
    for each pair. One term per kind, not per pair: SQLite refuses an expression deeper than
    1,000, and a batch may carry that many identities.
    """
    values_by_kind: dict[str, list[str]] = {}
    for kind, value in pairs:
        values_by_kind.setdefault(kind, []).append(value)
    condition = " OR ".join(
        f"(customer_identities.kind = ? AND customer_identities.value IN ({_marks(len(values))}))"
        for values in values_by_kind.values())
    return condition, [part for kind, values in values_by_kind.items()
                       for part in (kind, *values)]


def _sql_strings(values: Iterable[str]) -> str:
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


_SQLITE_INSERTS = {table.name: _SqliteInsert.of(table) for table in INSERTED_TABLES}
_SQLITE_ADD_IDENTITIES = _SqliteInsert.of(IDENTITIES, " ON CONFLICT (kind, value) DO NOTHING")
# The selects and updates of the Core statements above, in SQLite's SQL. {…}: placeholders.
_TICKET_SELECT = ("SELECT tickets.id, tickets.number, tickets.status, tickets.customer_id, "
                  "tickets.desk, tickets.channel, tickets.conversation_id")
_SQLITE_STORED_MESSAGES = (
    "SELECT messages.id, messages.idempotency_key, messages.ticket_id, messages.customer_id, "
    "tickets.number FROM messages LEFT OUTER JOIN tickets ON tickets.id = messages.ticket_id "
    "WHERE messages.idempotency_key IN ({keys}) OR messages.id IN ({ids})")
_SQLITE_KNOWN_IDENTITIES = (
    "SELECT customer_identities.kind, customer_identities.value, "
    "customer_identities.customer_id, customer_identities.verified, customers.created_at "
    "FROM customer_identities JOIN customers ON customers.id = customer_identities.customer_id "
    "WHERE {identities}")
# Linked tickets are internal: thread hints lead to customer-facing ones (statements.py).
_SQLITE_TICKETS_NAMED = (_TICKET_SELECT + " FROM tickets WHERE ({named}) "
                         "AND tickets.primary_ticket_id IS NULL")
_SQLITE_TICKETS_REPLIED_TO = (
    _TICKET_SELECT + ", messages.channel, messages.account, messages.message_id FROM messages "
    "JOIN tickets ON tickets.id = messages.ticket_id "
    "WHERE messages.message_id IN ({message_ids}) ORDER BY messages.persisted_at")
_SQLITE_CONVERSATION_TICKETS = (
    _TICKET_SELECT + " FROM tickets WHERE tickets.conversation_id IN ({conversations}) "
    "AND tickets.primary_ticket_id IS NULL "
    "ORDER BY tickets.created_at, tickets.id")
_SQLITE_TICKET_LINEAGE = (
    _TICKET_SELECT + ", tickets.skill_group, tickets.category, tickets.tags, "
    "tickets.merged_into, tickets.follow_up_of FROM tickets WHERE tickets.id IN ({ids}) "
    "OR (tickets.follow_up_of IN ({ids}) "
    f"AND tickets.status NOT IN ({_sql_strings(UNJOINABLE_STATUSES)})) "
    "ORDER BY tickets.created_at, tickets.id")
_SQLITE_CANCEL_TIMERS = (
    "UPDATE timers SET state = 'cancelled', reason = ? WHERE ticket_id IN ({ticket_ids}) "
    "AND kind IN ({kinds}) AND state = 'pending'")
_SQLITE_OPEN_TICKETS = (
    _TICKET_SELECT + " FROM tickets WHERE tickets.customer_id IN ({customers}) "
    f"AND tickets.status NOT IN ({_sql_strings(DONE_STATUSES)}) "
    "AND tickets.primary_ticket_id IS NULL "
    "ORDER BY tickets.created_at, tickets.id")
_SQLITE_RATED_TICKETS = (
    _TICKET_SELECT + ", tickets.satisfaction FROM tickets "
    "WHERE tickets.conversation_id IN ({conversations}) AND tickets.status != 'merged' "
    "AND tickets.primary_ticket_id IS NULL "
    "ORDER BY tickets.created_at, tickets.id")
_SQLITE_SET_SATISFACTION = (
    "UPDATE tickets SET satisfaction = ?, version = version + 1 WHERE id = ?")
_SQLITE_VERIFY_IDENTITIES = (
    "UPDATE customer_identities SET verified = 1 WHERE ({identities}) AND verified IS 0")
_SQLITE_BUMP_COUNTER = "UPDATE counters SET value = value + ? WHERE name = ? RETURNING value"
_SQLITE_TOUCH_TICKETS = (
    "UPDATE tickets SET status = ?, updated_at = ?, reopened_count = reopened_count + ?, "
    "version = version + 1 WHERE id = ?")


def _as_sqlalchemy_error(exc: Exception, sql: str | None, parameters: Any,
                         many: bool = False) -> Exception:
    """`exc` wrapped as SQLAlchemy wraps it: sqlite3.IntegrityError → sa_exc.IntegrityError
    (and OperationalError, DataError…, with `.orig`), anything else → sa_exc.StatementError.

    The store's retries and StorageUnavailable and the consumer's dead-lettering classify
    SQLAlchemy's exceptions; the fast path raises the same ones.
    """
    return sa_exc.DBAPIError.instance(sql, parameters, exc, sqlite3.Error, ismulti=many)


class SqliteWriteStatements:
    """WriteStatements on the raw sqlite3 connection of `SqliteWriter` (the fast path)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._cursor = connection.cursor()

    def _run(self, sql: str, parameters: Any = ()) -> list[Any]:
        """`parameters`: a tuple for `?` marks, a dict for `:name` ones."""
        try:
            return self._cursor.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise _as_sqlalchemy_error(exc, sql, parameters) from exc

    def _run_many(self, sql: str, parameters: Sequence[Any]) -> None:
        try:
            self._cursor.executemany(sql, parameters)
        except sqlite3.Error as exc:
            raise _as_sqlalchemy_error(exc, sql, parameters, many=True) from exc

    def _insert(self, statement: _SqliteInsert, rows: Sequence[dict[str, Any]]) -> None:
        try:
            parameters = [statement.parameters(row) for row in rows]
        except (TypeError, ValueError) as exc:  # a value UtcDateTime or JSON refuses
            raise _as_sqlalchemy_error(exc, statement.sql, rows, many=True) from exc
        self._run_many(statement.sql, parameters)

    def begin(self) -> None:
        self._run("BEGIN IMMEDIATE")  # see db.WRITE

    def commit(self) -> None:
        self._run("COMMIT")

    def stored_messages(self, keys: Sequence[str],
                        ids: Sequence[str]) -> Iterable[StoredMessageRow]:
        sql = _SQLITE_STORED_MESSAGES.format(keys=_marks(len(keys)), ids=_marks(len(ids)))
        return self._run(sql, (*keys, *ids))

    def known_identities(self, pairs: Sequence[tuple[str, str]]) -> Iterable[KnownIdentityRow]:
        condition, parameters = _identities_condition(pairs)
        rows = self._run(_SQLITE_KNOWN_IDENTITIES.format(identities=condition), parameters)
        return [(kind, value, customer_id, bool(verified), _from_sqlite_datetime(created_at))
                for kind, value, customer_id, verified, created_at in rows]

    def tickets_named(self, ids: Sequence[str], numbers: Sequence[int]) -> Iterable[TicketRow]:
        if not ids and not numbers:
            return []
        # Only the lists given: next to an empty `IN ()`, SQLite scans the table.
        conditions = []
        if ids:
            conditions.append(f"tickets.id IN ({_marks(len(ids))})")
        if numbers:
            conditions.append(f"tickets.number IN ({_marks(len(numbers))})")
        sql = _SQLITE_TICKETS_NAMED.format(named=" OR ".join(conditions))
        return self._run(sql, (*ids, *numbers))

    def tickets_replied_to(self, message_ids: Sequence[str]) -> Iterable[RepliedTicketRow]:
        return self._run(_SQLITE_TICKETS_REPLIED_TO.format(message_ids=_marks(len(message_ids))),
                         message_ids)

    def conversation_tickets(self, conversations: Sequence[str]) -> Iterable[TicketRow]:
        return self._run(_SQLITE_CONVERSATION_TICKETS.format(
            conversations=_marks(len(conversations))), conversations)

    def ticket_lineage(self, ids: Sequence[str]) -> Iterable[LineageRow]:
        rows = self._run(_SQLITE_TICKET_LINEAGE.format(ids=_marks(len(ids))), (*ids, *ids))
        # tags: the JSON text as SQLAlchemy reads it back.
        return [(*row[:9], None if row[9] is None else json.loads(row[9]), *row[10:])
                for row in rows]

    def cancel_timers(self, ticket_ids: Sequence[str], kinds: Sequence[str],
                      reason: str) -> None:
        self._run(_SQLITE_CANCEL_TIMERS.format(ticket_ids=_marks(len(ticket_ids)),
                                               kinds=_marks(len(kinds))),
                  (reason, *ticket_ids, *kinds))

    def open_tickets(self, customer_ids: Sequence[str]) -> Iterable[TicketRow]:
        return self._run(_SQLITE_OPEN_TICKETS.format(customers=_marks(len(customer_ids))),
                         customer_ids)

    def rated_tickets(self, conversations: Sequence[str]) -> Iterable[RatedTicketRow]:
        rows = self._run(_SQLITE_RATED_TICKETS.format(
            conversations=_marks(len(conversations))), conversations)
        # The JSON text as SQLAlchemy reads it back ('null' and NULL both None).
        return [(*row[:-1], None if row[-1] is None else json.loads(row[-1])) for row in rows]

    def set_satisfaction(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        self._run_many(_SQLITE_SET_SATISFACTION, [
            (db.json_dumps(satisfaction), ticket_id) for ticket_id, satisfaction in changes])

    def insert(self, table: Table, rows: Sequence[dict[str, Any]]) -> None:
        self._insert(_SQLITE_INSERTS[table.name], rows)

    def add_identities(self, rows: Sequence[dict[str, Any]]) -> None:
        self._insert(_SQLITE_ADD_IDENTITIES, rows)

    def verify_identities(self, pairs: Sequence[tuple[str, str]]) -> None:
        condition, parameters = _identities_condition(pairs)
        self._run(_SQLITE_VERIFY_IDENTITIES.format(identities=condition), parameters)

    def bump_counter(self, name: str, count: int) -> int | None:
        rows = self._run(_SQLITE_BUMP_COUNTER, (count, name))
        return rows[0][0] if rows else None

    def lock_planned(self, ticket_ids: Sequence[str], customer_ids: Sequence[str]) -> list[str]:
        # The writer's transaction opened with BEGIN IMMEDIATE: no other write ran since the
        # plan read these rows, so none can have been closed or merged under it.
        return []

    def touch_tickets(self, changes: Sequence[tuple[str, str, datetime, int]]) -> None:
        self._run_many(_SQLITE_TOUCH_TICKETS, [
            (status, _sqlite_datetime(updated_at), reopened, ticket_id)
            for ticket_id, status, updated_at, reopened in changes])

    def index_tickets(self, ticket_ids: Sequence[str], customer_ids: Sequence[str]) -> None:
        # The same SQL as the Core path (named parameters work in both): same documents.
        reindex(self._run, self._run_many, "sqlite", ticket_ids, customer_ids)


class SqliteWriter:
    """SQLite write transactions, each run whole (BEGIN IMMEDIATE … COMMIT) on one thread.

    Over aiosqlite every statement is a hop to its thread and back, plus SQLAlchemy's greenlet
    switches around each: ten or so per batch, most of a small batch's CPU. Here a batch is one
    hop, to a thread of our own with a connection (stdlib sqlite3, from a synchronous engine
    with the same pragmas) on the same file. The fast path keeps that connection checked out
    between batches and runs `SqliteWriteStatements` on it; `fast_path=False` runs
    `CoreWriteStatements` on an engine connection instead. The thread starts with the first
    write; exceptions come back as raised there, as SQLAlchemy's on both paths.
    """

    def __init__(self, url: URL, *, fast_path: bool = True) -> None:
        self.engine = db.make_sqlite_write_engine(url)
        self.fast_path = fast_path
        self._thread: ThreadPoolExecutor | None = None
        self._connection: PoolProxiedConnection | None = None

    async def run(self, work: Callable[[WriteStatements], T]) -> T:
        """`work(statements)` in one write transaction, committed if it returns."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="ticket-store-writer")
        transaction = self._fast_transaction if self.fast_path else self._core_transaction
        return await asyncio.get_running_loop().run_in_executor(self._thread, transaction, work)

    async def run_core(self, work: Callable[[Connection], T]) -> T:
        """`work(connection)` on a SQLAlchemy connection in one write transaction, on the
        writer thread (replies, delivery results, the relay's bookkeeping: not hot)."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="ticket-store-writer")
        return await asyncio.get_running_loop().run_in_executor(
            self._thread, self._connection_transaction, work)

    def _connection_transaction(self, work: Callable[[Connection], T]) -> T:
        with self.engine.connect() as connection, connection.begin():
            connection.exec_driver_sql("BEGIN IMMEDIATE")  # see db.WRITE
            return work(connection)

    def _core_transaction(self, work: Callable[[WriteStatements], T]) -> T:
        return self._connection_transaction(lambda connection: work(
            CoreWriteStatements(connection)))

    def _fast_transaction(self, work: Callable[[WriteStatements], T]) -> T:
        if self._connection is None:
            try:
                self._connection = self.engine.raw_connection()
            except sqlite3.Error as exc:
                raise _as_sqlalchemy_error(exc, None, None) from exc
        connection = self._connection.driver_connection
        statements = SqliteWriteStatements(connection)
        statements.begin()
        try:
            result = work(statements)
            statements.commit()
        except BaseException:
            self._roll_back(connection)
            raise
        return result

    def _roll_back(self, connection: sqlite3.Connection) -> None:
        try:
            connection.rollback()  # a no-op when SQLite rolled back by itself (disk full…)
        except sqlite3.Error:
            # A connection that cannot roll back is not trusted again; the next batch opens one.
            assert self._connection is not None
            self._connection.invalidate()
            self._release()

    def _release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _close_connections(self) -> None:
        self._release()
        self.engine.dispose()

    async def close(self) -> None:
        """After the writes already queued: close the connection there, then end the thread."""
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.get_running_loop().run_in_executor(thread, self._close_connections)
            thread.shutdown(wait=False)
