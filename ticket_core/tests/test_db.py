"""The schema: migrations match the models on both backends; SQLite pragmas; the engine factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from ticket_core.db import Base, make_engine, migrate
from ticket_core.store import TicketStore


def _modelled(item: Any, name: str | None, kind: str, reflected: bool, other: Any) -> bool:
    """What the models describe: not the search index's backend-only parts (migration 0011:
    SQLite's FTS5 table and its shadow tables, PostgreSQL's tsvector and its GIN index)."""
    if kind == "table":
        return not (name or "").startswith("search_fts")
    return not (kind in ("column", "index")
                and name in ("document", "ix_search_documents_document"))


async def test_migrations_match_the_models(store: TicketStore) -> None:
    async with store.engine.connect() as connection:
        diff = await connection.run_sync(lambda sync: compare_metadata(
            MigrationContext.configure(sync, opts={"compare_type": True,
                                                   "include_object": _modelled}),
            Base.metadata))
        version = (await connection.execute(text("SELECT version_num FROM alembic_version"))
                   ).scalar_one()
        counters = dict((await connection.execute(text("SELECT name, value FROM counters"))
                         ).all())
    assert diff == []
    assert version == "0017"
    assert counters == {"ticket_number": 1000, "event_id": 0, "events_relayed": 0}


async def test_migrate_creates_the_directory_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "intake.sqlite3"
    url = f"sqlite+aiosqlite:///{path}"
    await migrate(url)
    await migrate(url)
    assert path.exists()


async def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(
        tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/intake.sqlite3"
    await migrate(url)
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            async def pragma(name: str) -> object:
                return (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
            assert await pragma("journal_mode") == "wal"
            assert await pragma("foreign_keys") == 1
            assert await pragma("busy_timeout") == 30000
    finally:
        await engine.dispose()


def test_make_engine_refuses_other_databases() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        make_engine("mysql+aiomysql://root@localhost/x")


async def test_plain_driver_names_get_the_async_driver(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path}/x.sqlite3")
    try:
        assert engine.url.drivername == "sqlite+aiosqlite"
    finally:
        await engine.dispose()
    pg = make_engine("postgresql://postgres@127.0.0.1:5432/test")
    try:
        assert pg.url.drivername == "postgresql+asyncpg"
    finally:
        await pg.dispose()
