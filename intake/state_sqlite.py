"""The state store's SQLite path: the stdlib sqlite3 on a writer thread, group-committed.

Why not SQLAlchemy here: profiles of the WeChat, SDK and telephony connectors showed the state
store's round trips (an execution context per statement, aiosqlite's thread hop per call, a
lock per transaction) as most of their CPU per message. Here:

- one writer connection on one thread of its own. A write is a small function of the sqlite3
  connection; writes that arrive while a commit is under way are run together in the next
  transaction (`BEGIN IMMEDIATE` … `COMMIT`: one fsync for all, `synchronous=FULL` in WAL),
  and each caller is answered only after the commit that holds its write: durable when it
  returns, as before. One thread hop per group, not per statement.
- reads on a second connection and thread: WAL lets them run beside a commit, and a read
  issued after a write returned sees it (the write's commit came first).
- the SQL is constant text, so sqlite3's statement cache prepares each statement once.

A write that fails (disk full, the file locked by another process past the 30 s busy
timeout) fails its whole group, none of it committed; the statements cannot fail on their own
(upserts, conditional inserts, deletes). `:memory:` runs reads and writes on the one
connection and thread, since a second connection would see another database.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from .state_sql import ClaimedRow, Row, metadata

__all__ = ["SqliteState"]

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], Any]

BUSY_TIMEOUT_S = 30.0  # another process holding the write lock: wait this long, then fail


def _schema() -> list[str]:
    """The tables' DDL as SQLAlchemy would create them on SQLite (one schema for both paths)."""
    dialect = sqlite_dialect.dialect()
    statements = []
    for table in metadata.sorted_tables:
        statements.append(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
        statements += [str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
                       for index in table.indexes]
    return statements


SCHEMA = _schema()

UPSERT = ("INSERT INTO intake_state (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) "
          "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
          "updated_at = excluded.updated_at")
INSERT_NEW = ("INSERT INTO intake_state (namespace, key, value, updated_at) VALUES (?, ?, ?, ?) "
              "ON CONFLICT (namespace, key) DO NOTHING")
DELETE = "DELETE FROM intake_state WHERE namespace = ? AND key = ?"
GET = "SELECT value FROM intake_state WHERE namespace = ? AND key = ?"
ITEMS = ("SELECT key, value FROM intake_state WHERE namespace = ? AND key >= ? AND key < ? "
         "ORDER BY key LIMIT ?")
ITEMS_FROM = ("SELECT key, value FROM intake_state WHERE namespace = ? AND key >= ? "
              "ORDER BY key LIMIT ?")
ITEMS_ALL = "SELECT key, value FROM intake_state WHERE namespace = ? ORDER BY key LIMIT ?"
PUSH = ("INSERT INTO intake_state_queue (namespace, item, due_at, attempts, created_at) "
        "VALUES (?, ?, ?, 0, ?)")
DUE = ("SELECT id, item, attempts, created_at FROM intake_state_queue "
       "WHERE namespace = ? AND due_at <= ? ORDER BY due_at, id LIMIT ?")
LEASE = "UPDATE intake_state_queue SET due_at = ? WHERE id = ?"
DONE = "DELETE FROM intake_state_queue WHERE id = ?"
RETRY = "UPDATE intake_state_queue SET due_at = ?, attempts = attempts + 1 WHERE id = ?"
RETRY_WITH_ITEM = ("UPDATE intake_state_queue SET due_at = ?, attempts = attempts + 1, item = ? "
                   "WHERE id = ?")
DEPTH = "SELECT count(*) FROM intake_state_queue WHERE namespace = ?"
EARLIEST = "SELECT min(due_at) FROM intake_state_queue WHERE namespace = ?"


def _connect(path: str) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; the writer says BEGIN and COMMIT, and a
    # reader's SELECT is its own snapshot (never a read transaction left open between calls).
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                 check_same_thread=False, cached_statements=64)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
    return connection


def _settled(result: Any) -> Any:
    return None if isinstance(result, sqlite3.Cursor) else result


class SqliteState:
    """A SQLite file (or `:memory:`): group-committed writes on one thread, reads on another."""

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._memory = path in ("", ":memory:")
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_thread: ThreadPoolExecutor | None = None
        self._read_thread: ThreadPoolExecutor | None = None
        self._pending: list[tuple[Write, asyncio.Future[Any]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if not self._memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="state-writer")
        loop = asyncio.get_running_loop()
        self._writer = await loop.run_in_executor(self._write_thread, self._open_writer)
        if self._memory:
            self._read_thread, self._reader = self._write_thread, self._writer
        else:
            self._read_thread = ThreadPoolExecutor(1, thread_name_prefix="state-reader")
            self._reader = await loop.run_in_executor(self._read_thread, _connect, self.path)

    def _open_writer(self) -> sqlite3.Connection:
        connection = _connect(":memory:" if self._memory else self.path)
        connection.execute("BEGIN IMMEDIATE")
        for statement in SCHEMA:
            connection.execute(statement)
        connection.execute("COMMIT")
        return connection

    async def close(self) -> None:
        if self._committer is not None:  # let the writes already accepted commit
            await asyncio.shield(self._committer)
        loop = asyncio.get_running_loop()
        if self._reader is not None and self._reader is not self._writer:
            await loop.run_in_executor(self._read_thread, self._reader.close)
        if self._writer is not None:
            await loop.run_in_executor(self._write_thread, self._writer.close)
        for pool in {self._read_thread, self._write_thread}:
            if pool is not None:
                pool.shutdown(wait=False)
        self._reader = self._writer = None
        self._read_thread = self._write_thread = None

    # ---- writes: group commit ------------------------------------------------------------

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise RuntimeError("the state store is not open (await store.open())")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((work, future))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_groups(),
                                                  name="state-group-commit")
        # Shielded: a caller cancelled after its write joined a group is still committed (or
        # not) with the others; it just is not told.
        return await asyncio.shield(future)

    async def _commit_groups(self) -> None:
        loop = asyncio.get_running_loop()
        group: list[tuple[Write, asyncio.Future[Any]]] = []
        try:
            while self._pending:
                group, self._pending = self._pending, []
                try:
                    results = await loop.run_in_executor(
                        self._write_thread, self._commit, [work for work, _ in group])
                except Exception as exc:
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(group, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._committer = None
            # Cancelled (the loop is closing): whoever still waits is told, not left hanging.
            for _, future in group + self._pending:
                if not future.done():
                    future.set_exception(RuntimeError("the state store is closing"))
            self._pending = []

    def _commit(self, group: list[Write]) -> list[Any]:
        """On the writer thread: the group in one transaction, committed before it returns."""
        connection = self._writer
        assert connection is not None
        connection.execute("BEGIN IMMEDIATE")
        try:
            # A cursor must die on this thread: one freed on the event loop's thread resets its
            # statement there, beside this thread's next statement on the same connection
            # (SQLITE_MISUSE, "bad parameter or other API misuse").
            results = [_settled(work(connection)) for work in group]
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return results

    async def put_many(self, rows: list[Row], now: float) -> None:
        parameters = [(namespace, key, value, now) for namespace, key, value in rows]
        await self._write(lambda c: _settled(c.executemany(UPSERT, parameters)))

    async def put_new_with(self, claim: Row, rows: list[Row], now: float) -> bool:
        parameters = [(namespace, key, value, now) for namespace, key, value in rows]

        def work(connection: sqlite3.Connection) -> bool:
            if not connection.execute(INSERT_NEW, (*claim, now)).rowcount:
                return False
            if parameters:
                connection.executemany(UPSERT, parameters)
            return True

        return await self._write(work)

    async def delete(self, namespace: str, key: str) -> bool:
        return await self._write(lambda c: c.execute(DELETE, (namespace, key)).rowcount > 0)

    async def push(self, namespace: str, item: str, due_at: float, now: float) -> int:
        def work(connection: sqlite3.Connection) -> int:
            row_id = connection.execute(PUSH, (namespace, item, due_at, now)).lastrowid
            assert row_id is not None
            return row_id

        return await self._write(work)

    async def claim(self, namespace: str, limit: int, due_by: float,
                    leased_until: float) -> list[ClaimedRow]:
        def work(connection: sqlite3.Connection) -> list[ClaimedRow]:
            # In the writer's IMMEDIATE transaction: no other process claims between the two.
            rows = connection.execute(DUE, (namespace, due_by, limit)).fetchall()
            connection.executemany(LEASE, [(leased_until, row[0]) for row in rows])
            return [(int(i), str(item), int(a), float(c)) for i, item, a, c in rows]

        return await self._write(work)

    async def done(self, item_id: int) -> None:
        await self._write(lambda c: _settled(c.execute(DONE, (item_id,))))

    async def retry(self, item_id: int, due_at: float, item: str | None) -> None:
        if item is None:
            await self._write(lambda c: _settled(c.execute(RETRY, (due_at, item_id))))
        else:
            await self._write(lambda c: _settled(
                c.execute(RETRY_WITH_ITEM, (due_at, item, item_id))))

    # ---- reads: the reader connection ----------------------------------------------------

    async def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        reader = self._reader
        if reader is None:
            raise RuntimeError("the state store is not open (await store.open())")
        # fetchall: the statement is done (its snapshot released) before the thread returns.
        return await asyncio.get_running_loop().run_in_executor(
            self._read_thread, lambda: reader.execute(sql, parameters).fetchall())

    async def get(self, namespace: str, key: str) -> str | None:
        rows = await self._read(GET, (namespace, key))
        return str(rows[0][0]) if rows else None

    async def items(self, namespace: str, prefix: str, limit: int,
                    start: str | None) -> list[tuple[str, str]]:
        low = max(prefix, start) if start is not None else prefix
        if prefix:
            rows = await self._read(ITEMS, (namespace, low, prefix + "\U0010ffff", limit))
        elif start is not None:
            rows = await self._read(ITEMS_FROM, (namespace, low, limit))
        else:
            rows = await self._read(ITEMS_ALL, (namespace, limit))
        return [(str(key), str(value)) for key, value in rows]

    async def depth(self, namespace: str) -> int:
        return int((await self._read(DEPTH, (namespace,)))[0][0])

    async def earliest_due(self, namespace: str) -> float | None:
        earliest = (await self._read(EARLIEST, (namespace,)))[0][0]
        return None if earliest is None else float(earliest)
