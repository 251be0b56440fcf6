"""The connectors' small durable state: namespaced key/values and queues, SQLite or PostgreSQL.

What a connector must remember across restarts lives here, so that no channel imports a
database library: the sent-ledger of its replies, IMAP cursors, WeChat's pending replies, the
SDK's per-user log, the telephony journal. SQLite under `INTAKE_DATA_DIR` by default (WAL,
`synchronous=FULL`: a write is on disk when it returns); PostgreSQL when `INTAKE_STATE_URL`
names one, so replicas of a connector share it.

Values are JSON. A namespace is a word chosen by its user (`sent:email`, `imap:support@…`);
one store holds many. Queues are for work that outlives a process: an item is claimed for a
lease (a crash lets it come back when the lease ends), then finished or rescheduled.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .settings import IntakeSettings

__all__ = ["QueuedItem", "StateNamespace", "StateQueue", "StateStore"]

T = TypeVar("T")
JSON = Any  # a value json.dumps accepts: dict, list, str, int, float, bool or None
STATE_FILE = "state.sqlite3"

metadata = MetaData()
values_table = Table(
    "intake_state", metadata,
    Column("namespace", String(200), primary_key=True),
    Column("key", String(500), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)
queue_table = Table(
    "intake_state_queue", metadata,
    # BigInteger on PostgreSQL, INTEGER PRIMARY KEY (the rowid) on SQLite.
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("namespace", String(200), nullable=False),
    Column("item", Text, nullable=False),
    Column("due_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Index("intake_state_queue_due", "namespace", "due_at", "id"),
)


@dataclass(frozen=True)
class QueuedItem:
    """One claimed queue item: `attempts` counts the earlier reschedules (0 the first time)."""

    id: int
    item: JSON
    attempts: int
    created_at: float


def state_url(settings: IntakeSettings) -> str:
    """`INTAKE_STATE_URL`, or a SQLite file under `INTAKE_DATA_DIR`."""
    url = settings.state_url
    if not url:
        return f"sqlite+aiosqlite:///{(settings.data_dir / STATE_FILE).resolve()}"
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


class StateStore:
    """The store; `namespace(name)` and `queue(name)` give the views channel code uses."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema
        self._engine: AsyncEngine | None = None
        # SQLite has one writer at a time: taking turns here avoids "database is locked"
        # between this process's own connections (other processes wait on the busy timeout).
        self._write_turn = asyncio.Lock()
        # Key/value writes on SQLite are group-committed: those that arrive while a commit is
        # under way share the next transaction (one fsync), each answered once it committed.
        self._pending: list[tuple[Callable[[AsyncConnection], Awaitable[Any]],
                                  asyncio.Future[Any]]] = []
        self._committer: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: IntakeSettings) -> StateStore:
        return cls(state_url(settings))

    @property
    def dialect(self) -> str:
        return self._require().dialect.name

    async def open(self) -> None:
        """Create the tables if missing (and a SQLite file's directory); idempotent."""
        if self._engine is not None:
            return
        if self.url.startswith("sqlite"):
            path = self.url.split("///", 1)[1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(self.url, connect_args={"timeout": 30})
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            engine = create_async_engine(self.url, pool_pre_ping=True)
        if self.schema:
            engine = engine.execution_options(schema_translate_map={None: self.schema})
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
        self._engine = engine

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def __aenter__(self) -> StateStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def put_many(self, writes: list[tuple[str, str, JSON]]) -> None:
        """Write (namespace, key, value) triples in one transaction: durable together when it
        returns, one commit (one fsync on SQLite) for all of them."""
        if not writes:
            return
        now = time.time()
        statements = []
        for namespace, key, value in writes:
            body = _dumps(value)
            statement = self._insert(values_table).values(
                namespace=_checked(namespace), key=key, value=body, updated_at=now)
            statements.append(statement.on_conflict_do_update(
                index_elements=[values_table.c.namespace, values_table.c.key],
                set_={"value": body, "updated_at": now}))

        async def work(connection: AsyncConnection) -> None:
            for statement in statements:
                await connection.execute(statement)

        await self.write(work)

    async def put_new_with(self, namespace: str, key: str, value: JSON,
                           writes: list[tuple[str, str, JSON]]) -> bool:
        """Write `value` at `key` only if absent and, if so, `writes` too, in one transaction;
        True when this call wrote them (a claim and what goes with it, durable together)."""
        now = time.time()
        claim = self._insert(values_table).values(
            namespace=_checked(namespace), key=key, value=_dumps(value), updated_at=now
        ).on_conflict_do_nothing(index_elements=[values_table.c.namespace, values_table.c.key])
        statements = []
        for other_namespace, other_key, other_value in writes:
            body = _dumps(other_value)
            statements.append(self._insert(values_table).values(
                namespace=_checked(other_namespace), key=other_key, value=body, updated_at=now,
            ).on_conflict_do_update(
                index_elements=[values_table.c.namespace, values_table.c.key],
                set_={"value": body, "updated_at": now}))

        async def work(connection: AsyncConnection) -> bool:
            if not (await connection.execute(claim)).rowcount:
                return False
            for statement in statements:
                await connection.execute(statement)
            return True

        return await self.write(work)

    def namespace(self, name: str) -> StateNamespace:
        return StateNamespace(self, _checked(name))

    def queue(self, name: str) -> StateQueue:
        return StateQueue(self, _checked(name))

    def _require(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the state store is not open (await store.open())")
        return self._engine

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        engine = self._require()
        if engine.dialect.name == "sqlite":
            async with self._write_turn, engine.begin() as connection:
                yield connection
        else:
            async with engine.begin() as connection:
                yield connection

    async def write(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run `work` in a write transaction; its result once committed (durable).

        On SQLite, writes arriving together share one transaction and one commit; `work` must
        then only execute statements that cannot fail on their own (upserts, conditional
        inserts, deletes): a failure fails the whole group, none of it committed.
        """
        if self._require().dialect.name != "sqlite":
            async with self.transaction() as connection:
                return await work(connection)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((work, future))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_groups(),
                                                  name="state-group-commit")
        return await asyncio.shield(future)

    async def _commit_groups(self) -> None:
        try:
            while self._pending:
                group, self._pending = self._pending, []
                try:
                    async with self.transaction() as connection:
                        results = [await work(connection) for work, _ in group]
                except BaseException as exc:
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, future), result in zip(group, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._committer = None
            for _, future in self._pending:  # cancelled while some waited: they are told
                if not future.done():
                    future.set_exception(RuntimeError("the state store is closing"))
            self._pending = []

    def _insert(self, table: Table) -> Any:
        return (postgresql.insert(table) if self.dialect == "postgresql"
                else sqlite.insert(table))


class StateNamespace:
    """Key/values under one namespace; keys are strings, values JSON."""

    def __init__(self, store: StateStore, name: str) -> None:
        self.store = store
        self.name = name

    async def get(self, key: str, default: JSON = None) -> JSON:
        async with self.store.transaction() as connection:
            row = (await connection.execute(
                select(values_table.c.value).where(values_table.c.namespace == self.name,
                                                   values_table.c.key == key))).first()
        return default if row is None else json.loads(row[0])

    async def put(self, key: str, value: JSON) -> None:
        """Write `value` (replacing what was there); durable when it returns."""
        body = _dumps(value)
        statement = self.store._insert(values_table).values(
            namespace=self.name, key=key, value=body, updated_at=time.time())
        statement = statement.on_conflict_do_update(
            index_elements=[values_table.c.namespace, values_table.c.key],
            set_={"value": body, "updated_at": time.time()})

        async def work(connection: AsyncConnection) -> None:
            await connection.execute(statement)

        await self.store.write(work)

    async def put_new(self, key: str, value: JSON) -> bool:
        """Write `value` only if `key` is absent; True when this call wrote it.

        Two replicas racing for one key: exactly one gets True (a claim, e.g. "I send this").
        """
        statement = self.store._insert(values_table).values(
            namespace=self.name, key=key, value=_dumps(value), updated_at=time.time())
        statement = statement.on_conflict_do_nothing(
            index_elements=[values_table.c.namespace, values_table.c.key])

        async def work(connection: AsyncConnection) -> bool:
            return bool((await connection.execute(statement)).rowcount)

        return await self.store.write(work)

    async def delete(self, key: str) -> bool:
        statement = delete(values_table).where(
            values_table.c.namespace == self.name, values_table.c.key == key)

        async def work(connection: AsyncConnection) -> bool:
            return bool((await connection.execute(statement)).rowcount)

        return await self.store.write(work)

    async def items(self, prefix: str = "", limit: int = 1000, *,
                    start: str | None = None) -> list[tuple[str, JSON]]:
        """(key, value) pairs whose key starts with `prefix`, in key order; with `start`, only
        keys from it on (a log read from a position, a page after the last key seen)."""
        query = (select(values_table.c.key, values_table.c.value)
                 .where(values_table.c.namespace == self.name)
                 .order_by(values_table.c.key).limit(limit))
        if prefix:
            query = query.where(values_table.c.key >= prefix,
                                values_table.c.key < prefix + "\U0010ffff")
        if start is not None:
            query = query.where(values_table.c.key >= start)
        async with self.store.transaction() as connection:
            rows = (await connection.execute(query)).all()
        return [(key, json.loads(value)) for key, value in rows]


class StateQueue:
    """A small durable queue: push, claim what is due for a lease, then finish or reschedule."""

    def __init__(self, store: StateStore, name: str) -> None:
        self.store = store
        self.name = name

    async def push(self, item: JSON, *, delay_s: float = 0.0) -> int:
        """Add `item`, due after `delay_s`; returns its id. Durable when it returns."""
        now = time.time()
        async with self.store.transaction() as connection:
            result = await connection.execute(queue_table.insert().values(
                namespace=self.name, item=_dumps(item), due_at=now + delay_s, attempts=0,
                created_at=now).returning(queue_table.c.id))
            return int(result.scalar_one())

    async def claim(self, limit: int = 10, *, lease_s: float = 300.0,
                    due_by: float | None = None) -> list[QueuedItem]:
        """Up to `limit` due items, oldest first, each hidden from other claims for `lease_s`.

        Finish each with `done` or `retry`; one left alone (its claimer died) is due again
        when its lease ends. `due_by` (a time.time() value) claims what is due by then instead
        of now: tests use it to skip a retry's wait.
        """
        now = time.time()
        due = (select(queue_table.c.id, queue_table.c.item, queue_table.c.attempts,
                      queue_table.c.created_at)
               .where(queue_table.c.namespace == self.name,
                      queue_table.c.due_at <= (now if due_by is None else due_by))
               .order_by(queue_table.c.due_at, queue_table.c.id).limit(limit))
        if self.store.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)  # replicas claim different items
        async with self.store.transaction() as connection:
            rows = (await connection.execute(due)).all()
            if rows:
                await connection.execute(
                    update(queue_table).where(queue_table.c.id.in_([r.id for r in rows]))
                    .values(due_at=now + lease_s))
        return [QueuedItem(int(r.id), json.loads(r.item), int(r.attempts), float(r.created_at))
                for r in rows]

    async def done(self, item_id: int) -> None:
        async with self.store.transaction() as connection:
            await connection.execute(delete(queue_table).where(queue_table.c.id == item_id))

    async def retry(self, item_id: int, *, delay_s: float, item: JSON = None) -> None:
        """Due again after `delay_s`, one more attempt counted (and `item` replaced if given)."""
        values: dict[str, Any] = {"due_at": time.time() + delay_s,
                                  "attempts": queue_table.c.attempts + 1}
        if item is not None:
            values["item"] = _dumps(item)
        async with self.store.transaction() as connection:
            await connection.execute(
                update(queue_table).where(queue_table.c.id == item_id).values(**values))

    async def depth(self) -> int:
        async with self.store.transaction() as connection:
            count = (await connection.execute(
                select(func.count()).select_from(queue_table)
                .where(queue_table.c.namespace == self.name))).scalar_one()
        return int(count)

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest item is due (0 if one is), None when empty."""
        async with self.store.transaction() as connection:
            earliest = (await connection.execute(
                select(func.min(queue_table.c.due_at))
                .where(queue_table.c.namespace == self.name))).scalar_one()
        return None if earliest is None else max(0.0, float(earliest) - time.time())


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
    cursor.close()


def _dumps(value: JSON) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _checked(name: str) -> str:
    if not name or len(name) > 200:
        raise ValueError(f"a state namespace is 1 to 200 characters, not {name!r}")
    return name
