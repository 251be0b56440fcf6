"""`intake health`, `intake outbox` and `intake doctor` on the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from intake.bus import Bus
from intake.channel import discover_channels
from intake.doctor import diagnose, redact
from intake.outbox_files import outbox_path
from intake.service import Service, serve
from intake.settings import IntakeSettings
from tests.conftest import IN_CI
from ticket_core.db import migrate

from .test_outbox_files import fill

PG_SERVER = os.environ.get("INTAKE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
PG_SERVER = PG_SERVER.replace("postgresql+asyncpg://", "postgresql://").rstrip("/")


async def intake(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "intake.cli", *args, env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, output.decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_health_answers_for_a_running_service_and_its_readiness(
        settings: IntakeSettings) -> None:
    port = free_port()
    unready = True

    async def gate(_app: object) -> str | None:
        return "waiting for the test" if unready else None

    service = Service(name="router", port=port, settings=settings, ready_checks=[gate])
    stop = asyncio.Event()
    running = asyncio.create_task(serve([service], stop=stop))
    env = {"INTAKE_ROUTER_PORT": str(port)}
    try:
        await asyncio.sleep(0.3)
        assert (await intake("health", "router", env=env))[0] == 0
        code, output = await intake("health", "router", "--ready", env=env)
        assert code == 1 and "503" in output and "waiting for the test" in output
        unready = False
        assert (await intake("health", "router", "--ready", env=env))[0] == 0
    finally:
        stop.set()
        await running
    code, output = await intake("health", "router", env=env)
    assert code == 1 and "unreachable" in output
    assert (await intake("health", "no-such-service"))[0] == 2


async def test_outbox_list_and_drain_by_hand(bus: Bus, settings: IntakeSettings,
                                             tmp_path: Path) -> None:
    left = outbox_path(tmp_path, "webform", "scaled-down")
    fill(left, ["a", "b"])
    env = {"INTAKE_BUS_PREFIX": settings.bus_prefix, "INTAKE_DATA_DIR": str(tmp_path)}
    code, output = await intake("outbox", "list", env=env)
    assert code == 0 and "webform-scaled-down.sqlite3" in output and "2 waiting" in output
    assert "not held" in output
    code, output = await intake("outbox", "drain", env=env)
    assert code == 0 and "published 2 message(s)" in output, output
    assert not left.exists()
    code, output = await intake("outbox", "list", env=env)
    assert "no outboxes" in output


@pytest.fixture
async def fresh_postgres() -> AsyncIterator[str]:
    """An empty database of its own, as the plain postgresql:// URI CloudNativePG gives."""
    name = f"intake_doc_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(f"{PG_SERVER.replace('postgresql://', 'postgresql+asyncpg://')}"
                                "/test", isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        await admin.dispose()
        if IN_CI:
            pytest.fail(f"PostgreSQL unreachable: {exc!r}")
        pytest.skip(f"PostgreSQL unreachable: {exc!r}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


def problems_of(findings: list) -> list[str]:  # type: ignore[type-arg]
    return [finding.line() for finding in findings if finding.problem]


async def test_doctor_finds_each_problem_and_says_where(
        bus: Bus, settings: IntakeSettings, tmp_path: Path, fresh_postgres: str) -> None:
    dead_port = free_port()
    urls = (f"amqp://guest:guest@127.0.0.1:5672/,"
            f"amqp://intake:s3cr3t-pw@127.0.0.1:{dead_port}/")
    doctor_settings = settings.model_copy(update={"amqp_url": urls,
                                                  "database_url": fresh_postgres})
    fill(outbox_path(tmp_path, "webform", "crashed"), ["x"])
    # The queues each sender's connector declares for its replies, as it would at start.
    senders = [name for name, channel in sorted(discover_channels().items())
               if channel.sender is not None]
    assert senders  # email, wechat, sdk: their outbound queues are part of the topology
    for name in senders:
        await bus._declare_queue(f"outbound.{name}")
    problems = problems_of(await diagnose(doctor_settings))
    text_ = "\n".join(problems)
    # The node that is down, by host:port; the consumers missing on the topology the bus made.
    assert f"127.0.0.1:{dead_port}: unreachable" in text_
    assert f"queue {bus.names('router')}: no consumer" in text_
    assert "intake run router" in text_ and "intake run ticket-core" in text_
    # The database is reachable (a plain postgresql:// URI) but not migrated.
    assert "migrations at none" in text_ and "intake migrate" in text_
    assert "webform-crashed.sqlite3: 1 message(s) and no running instance" in text_
    assert "topology" not in text_  # every exchange and queue exists
    await migrate(doctor_settings.effective_database_url)
    after = "\n".join(problems_of(await diagnose(doctor_settings)))
    assert "migrations" not in after


async def test_doctor_exits_non_zero_and_never_prints_credentials(
        settings: IntakeSettings, tmp_path: Path) -> None:
    dead_port = free_port()
    env = {"INTAKE_AMQP_URL": f"amqp://intake:s3cr3t-pw@127.0.0.1:{dead_port}/",
           "INTAKE_DATABASE_URL": f"postgresql://intake:db-s3cr3t@127.0.0.1:{free_port()}/x",
           "INTAKE_DATA_DIR": str(tmp_path), "INTAKE_BUS_PREFIX": settings.bus_prefix}
    code, output = await intake("doctor", env=env)
    assert code == 1
    assert f"127.0.0.1:{dead_port}: unreachable" in output
    assert "database" in output and "unreachable" in output
    assert "s3cr3t" not in output and "intake:" not in output
    code, output = await intake("doctor", "--no-database", env={
        **env, "INTAKE_AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/"})
    assert "database" not in output


def test_redact_removes_user_password_and_token() -> None:
    settings = IntakeSettings(amqp_url="amqp://u:broker-pass@h:5672/",
                              database_url="postgresql://app:db-pass@pg/app",
                              api_token="token-value-123")
    line = redact("amqp://u:broker-pass@h:5672/ failed; db-pass; token-value-123", settings)
    assert "broker-pass" not in line and "db-pass" not in line and "token-value" not in line
    assert "h:5672" in line
