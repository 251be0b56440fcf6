"""Fixtures: a ticket store on SQLite (a temp file) and on a fresh PostgreSQL database per session.

PostgreSQL: `INTAKE_TEST_POSTGRES` (default `postgresql+asyncpg://postgres@127.0.0.1:5432`);
each session creates `intake_t_<hex>` from the `test` database and drops it at the end, so
parallel runs never meet. Unreachable: the PostgreSQL half is skipped with the reason, or fails
under CI=true.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import bus, bus_prefix, settings  # noqa: F401  (the real broker's fixtures)
from ticket_core.db import make_engine, migrate
from ticket_core.store import TicketStore

IN_CI = os.environ.get("CI") == "true"
PG_SERVER = os.environ.get("INTAKE_TEST_POSTGRES",
                           "postgresql+asyncpg://postgres@127.0.0.1:5432").rstrip("/")


async def _admin(statement: str) -> None:
    engine = create_async_engine(f"{PG_SERVER}/test", isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    name = f"intake_t_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(asyncio.wait_for(_admin(f'CREATE DATABASE "{name}"'), 15))
    except Exception as exc:
        reason = f"PostgreSQL is not reachable at {PG_SERVER}: {exc!r}"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    url = f"{PG_SERVER}/{name}"
    try:
        asyncio.run(migrate(url))
        yield url
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once per session (13 migrations: about 0.2 s a test when
    each test migrated its own file); each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "intake.sqlite3"
    asyncio.run(migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "var" / "intake.sqlite3"
        target.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal"):  # the engine closed: normally no WAL is left
            source = template.with_name(template.name + suffix)
            if source.exists():
                shutil.copyfile(source, target.with_name(target.name + suffix))
        return f"sqlite+aiosqlite:///{target}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[TicketStore]:
    """A store on an empty, migrated database (SQLite: a copy of the session's template;
    PostgreSQL: the session's, emptied)."""
    engine = make_engine(database_url)
    if engine.dialect.name == "postgresql":
        async with engine.begin() as connection:
            # The history's triggers refuse TRUNCATE (migration 0015); replica mode skips
            # triggers for this transaction only, as a restore would (the tests' superuser).
            await connection.execute(text("SET LOCAL session_replication_role = replica"))
            await connection.execute(text(
                "TRUNCATE history, satisfaction_requests, quick_replies, notifications, "
                "api_tokens, agents, timers, calls, events, outbox, "
                "attachments, messages, tickets, "
                "search_documents, "
                "customer_identities, customers RESTART IDENTITY CASCADE"))
            await connection.execute(text("DELETE FROM counters"))
            await connection.execute(text(
                "INSERT INTO counters (name, value) VALUES ('ticket_number', 1000), "
                "('event_id', 0), ('events_relayed', 0)"))
    store = TicketStore(engine)
    yield store
    await store.close()
    await engine.dispose()
