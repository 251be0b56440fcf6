"""The state store's tables, and its PostgreSQL path on SQLAlchemy (asyncpg).

`intake/state.py` is the public face (StateStore and its views); it hands each operation, its
values already JSON text, to a backend: this one for PostgreSQL (replicas share it: claims use
`FOR UPDATE SKIP LOCKED`, a put_new race has one winner by the primary key), or
`state_sqlite.py` for a SQLite file. The tables are defined here once; the SQLite path creates
the same ones from this metadata, so a file written by either reads the same.
"""

from __future__ import annotations

from typing import Any

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
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["SqlAlchemyState", "metadata", "queue_table", "values_table"]

Row = tuple[str, str, str]  # (namespace, key, value as JSON text)
ClaimedRow = tuple[int, str, int, float]  # (id, item as JSON text, attempts, created_at)

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


def _upsert(rows: list[Row], now: float) -> Any:
    statement = postgresql.insert(values_table).values(
        [{"namespace": n, "key": k, "value": v, "updated_at": now} for n, k, v in rows])
    return statement.on_conflict_do_update(
        index_elements=[values_table.c.namespace, values_table.c.key],
        set_={"value": statement.excluded.value, "updated_at": statement.excluded.updated_at})


class SqlAlchemyState:
    """Each operation one transaction on a pooled connection (PostgreSQL)."""

    dialect = "postgresql"

    def __init__(self, url: str, schema: str | None) -> None:
        self.url = url
        self.schema = schema
        self._engine: AsyncEngine | None = None

    async def open(self) -> None:
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

    def _begin(self) -> Any:
        if self._engine is None:
            raise RuntimeError("the state store is not open (await store.open())")
        return self._engine.begin()

    async def put_many(self, rows: list[Row], now: float) -> None:
        # Sorted: two transactions upserting the same keys lock them in one order (no deadlock).
        async with self._begin() as connection:
            await connection.execute(_upsert(sorted(rows), now))

    async def put_new_with(self, claim: Row, rows: list[Row], now: float) -> bool:
        namespace, key, value = claim
        statement = postgresql.insert(values_table).values(
            namespace=namespace, key=key, value=value, updated_at=now,
        ).on_conflict_do_nothing(index_elements=[values_table.c.namespace, values_table.c.key])
        async with self._begin() as connection:
            if not (await connection.execute(statement)).rowcount:
                return False
            if rows:
                await connection.execute(_upsert(sorted(rows), now))
            return True

    async def delete(self, namespace: str, key: str) -> bool:
        async with self._begin() as connection:
            return bool((await connection.execute(delete(values_table).where(
                values_table.c.namespace == namespace, values_table.c.key == key))).rowcount)

    async def get(self, namespace: str, key: str) -> str | None:
        async with self._begin() as connection:
            row = (await connection.execute(
                select(values_table.c.value).where(values_table.c.namespace == namespace,
                                                   values_table.c.key == key))).first()
        return None if row is None else str(row[0])

    async def items(self, namespace: str, prefix: str, limit: int,
                    start: str | None) -> list[tuple[str, str]]:
        query = (select(values_table.c.key, values_table.c.value)
                 .where(values_table.c.namespace == namespace)
                 .order_by(values_table.c.key).limit(limit))
        if prefix:
            query = query.where(values_table.c.key >= prefix,
                                values_table.c.key < prefix + "\U0010ffff")
        if start is not None:
            query = query.where(values_table.c.key >= start)
        async with self._begin() as connection:
            rows = (await connection.execute(query)).all()
        return [(str(key), str(value)) for key, value in rows]

    async def push(self, namespace: str, item: str, due_at: float, now: float) -> int:
        async with self._begin() as connection:
            result = await connection.execute(queue_table.insert().values(
                namespace=namespace, item=item, due_at=due_at, attempts=0,
                created_at=now).returning(queue_table.c.id))
            return int(result.scalar_one())

    async def claim(self, namespace: str, limit: int, due_by: float,
                    leased_until: float) -> list[ClaimedRow]:
        due = (select(queue_table.c.id, queue_table.c.item, queue_table.c.attempts,
                      queue_table.c.created_at)
               .where(queue_table.c.namespace == namespace, queue_table.c.due_at <= due_by)
               .order_by(queue_table.c.due_at, queue_table.c.id).limit(limit)
               .with_for_update(skip_locked=True))  # replicas claim different items
        async with self._begin() as connection:
            rows = (await connection.execute(due)).all()
            if rows:
                await connection.execute(
                    update(queue_table).where(queue_table.c.id.in_([r.id for r in rows]))
                    .values(due_at=leased_until))
        return [(int(r.id), str(r.item), int(r.attempts), float(r.created_at)) for r in rows]

    async def done(self, item_id: int) -> None:
        async with self._begin() as connection:
            await connection.execute(delete(queue_table).where(queue_table.c.id == item_id))

    async def retry(self, item_id: int, due_at: float, item: str | None) -> None:
        values: dict[str, Any] = {"due_at": due_at, "attempts": queue_table.c.attempts + 1}
        if item is not None:
            values["item"] = item
        async with self._begin() as connection:
            await connection.execute(
                update(queue_table).where(queue_table.c.id == item_id).values(**values))

    async def depth(self, namespace: str) -> int:
        async with self._begin() as connection:
            count = (await connection.execute(
                select(func.count()).select_from(queue_table)
                .where(queue_table.c.namespace == namespace))).scalar_one()
        return int(count)

    async def earliest_due(self, namespace: str) -> float | None:
        async with self._begin() as connection:
            earliest = (await connection.execute(
                select(func.min(queue_table.c.due_at))
                .where(queue_table.c.namespace == namespace))).scalar_one()
        return None if earliest is None else float(earliest)
