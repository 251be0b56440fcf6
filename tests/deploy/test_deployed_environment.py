"""Every service starts and becomes ready with the environment the compose file, and the
production manifests, give it: their host names mapped to this machine's broker and
PostgreSQL, their secrets given values, the ports moved to free ones."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from intake.bus import Bus
from intake.deploy.catalog import ServiceSpec, services
from intake.deploy.rabbitmq import credentials_secret
from intake.settings import IntakeSettings
from tests.conftest import IN_CI, delete_topology

from .support import DEPLOY, by_kind, rendered_overlay

INTAKE = Path(sys.executable).parent / "intake"
PG_ADMIN = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def database() -> AsyncIterator[str]:
    name = f"intake_dep_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        await admin.dispose()
        if IN_CI:
            pytest.fail(f"PostgreSQL unreachable: {exc!r}")
        pytest.skip(f"PostgreSQL unreachable: {exc!r}")
    try:
        yield name
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}`; Kubernetes' `$(VAR)`."""
    def compose(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        if name in variables:
            return variables[name]
        if op == ":-":
            return rest
        raise KeyError(f"{name} is required: {rest}")

    value = re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", compose, value)
    return re.sub(r"\$\((\w+)\)", lambda m: variables[m.group(1)], value)


def to_this_machine(value: str) -> str:
    for host in ("@rabbitmq:", "@postgres:", "@intake-rabbitmq:"):
        value = value.replace(host, "@127.0.0.1:")
    return value


def compose_environment(spec: ServiceSpec | None, database: str) -> dict[str, str]:
    document = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    service = document["services"][spec.name if spec else "migrate"]
    secrets = {"RABBITMQ_USER": "guest", "RABBITMQ_PASSWORD": "guest",
               "POSTGRES_USER": "postgres", "POSTGRES_PASSWORD": "trust-ignores-it",
               "POSTGRES_DB": database, "INTAKE_API_TOKEN": "deploy-test-token"}
    return {name: to_this_machine(interpolate(str(value), secrets))
            for name, value in service["environment"].items()}


def manifest_environment(spec: ServiceSpec, database: str) -> dict[str, str]:
    docs = rendered_overlay("production")
    workloads = {**by_kind(docs, "Deployment"), **by_kind(docs, "StatefulSet")}
    container = workloads[spec.name]["spec"]["template"]["spec"]["containers"][0]
    secrets = {("intake-rabbitmq-default-user", "username"): "guest",
               ("intake-rabbitmq-default-user", "password"): "guest",
               (credentials_secret(spec.name), "username"): "guest",
               (credentials_secret(spec.name), "password"): "guest",
               ("intake-postgres-app", "uri"):
                   f"postgresql://postgres:x@intake-postgres-rw:5432/{database}",
               ("intake-secrets", "api-token"): "deploy-test-token"}
    env: dict[str, str] = {}
    for item in container["env"]:
        source: dict[str, Any] = item.get("valueFrom", {})
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            value = secrets[(ref["name"], ref["key"])]
        elif "fieldRef" in source:
            value = f"{spec.name}-0"
        else:
            value = interpolate(item["value"], env)
        env[item["name"]] = to_this_machine(value).replace("@intake-postgres-rw:",
                                                            "@127.0.0.1:")
    return env


@pytest.fixture
def run_services(tmp_path: Path, settings: IntakeSettings) -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            process = subprocess.Popen([str(INTAKE), *args], env=env, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                process.kill()


async def wait_ready(spec: ServiceSpec, env: dict[str, str], process: Any, log: Path) -> None:
    for _ in range(120):
        if process.poll() is not None:
            raise AssertionError(f"{spec.name} exited with {process.returncode}:\n"
                                 f"{log.read_text()[-3000:]}")
        check = await asyncio.create_subprocess_exec(
            str(INTAKE), "health", spec.name, "--ready", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        if await check.wait() == 0:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{spec.name} never became ready:\n{log.read_text()[-3000:]}")


@pytest.mark.parametrize("source", ["compose", "production"])
async def test_every_service_becomes_ready_with_its_deployed_environment(
        source: str, database: str, settings: IntakeSettings, tmp_path: Path,
        run_services: Any) -> None:
    base = {"PATH": os.environ.get("PATH", ""), "INTAKE_BUS_PREFIX": settings.bus_prefix,
            "INTAKE_CONFIG": str(DEPLOY / "intake.example.yaml")}
    migrate_env = {**base, **compose_environment(None, database),
                   "INTAKE_CONFIG": base["INTAKE_CONFIG"], "INTAKE_DATA_DIR": str(tmp_path)}
    migrated = await asyncio.to_thread(
        subprocess.run, [str(INTAKE), "migrate"], env=migrate_env, capture_output=True,
        text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    running = []
    for spec in services():
        env = (compose_environment(spec, database) if source == "compose"
               else manifest_environment(spec, database))
        data = tmp_path / spec.name
        env.update({**base, "INTAKE_DATA_DIR": str(data),  # the mounts, moved here
                    f"INTAKE_{spec.env_name}_PORT": str(free_port())})
        for listener, _port in spec.tcp_ports:
            env[f"INTAKE_{spec.env_name}_{listener.upper()}_PORT"] = str(free_port())
        assert env["INTAKE_HOST"] == "0.0.0.0"
        log = tmp_path / f"{spec.name}.log"
        running.append((spec, env, run_services(["run", spec.name], env, log), log))
    try:
        for spec, env, process, log in running:
            await wait_ready(spec, env, process, log)
    finally:
        # Stopped before their topology goes, or their consumers would declare it again.
        for _spec, _env, process, _log in running:
            process.terminate()
        for _spec, _env, process, _log in running:
            await asyncio.to_thread(process.wait, 40)
        bus = Bus(settings, "cleanup")
        await bus.connect(timeout=15)
        await delete_topology(bus)
        await bus.close()
