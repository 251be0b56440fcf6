"""`intake doctor`: what is wrong with this deployment, where, and how to fix it.

Run with a service's own environment (in its container, or with its unit's environment
file). Checks the config, every broker node of `INTAKE_AMQP_URL` (reachable, the topology
there, a consumer on each core queue), the database (reachable, migrations current, its
clock), free disk for the data dir, outboxes no running instance holds, and the blob store
(a probe written and read back). One line per finding; a problem says what, where (a node
as `host:port`, a file, a queue) and the fix. Credentials never appear. Exit 1 on a problem.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from .settings import IntakeSettings, settings_problems

# Free space under which the outbox and blobs are at risk (a full disk answers 503).
MIN_FREE_BYTES = 1024**3
MIN_FREE_RATIO = 0.05
MAX_CLOCK_SKEW_S = 2.0
PROBE_BLOB = b"intake doctor probe: the blob store can write and read\n"
_CREDENTIALS = re.compile(r"(//)[^/@\s]+@")


@dataclass(frozen=True)
class Finding:
    check: str
    where: str
    text: str
    fix: str = ""
    noted: bool = False  # a check that could not be made: said, but not a problem

    @property
    def problem(self) -> bool:
        return bool(self.fix)

    def line(self) -> str:
        if self.problem:
            return f"PROBLEM {self.check:<9} {self.where}: {self.text}; fix: {self.fix}"
        if self.noted:
            return f"note    {self.check:<9} {self.where}: {self.text}"
        return f"ok      {self.check:<9} {self.where}: {self.text}"


def ok(check: str, where: str, text: str) -> Finding:
    return Finding(check, where, text)


def bad(check: str, where: str, text: str, fix: str) -> Finding:
    return Finding(check, where, text, fix)


def redact(text: str, settings: IntakeSettings) -> str:
    """`text` without the user and password of any URL, nor a secret the settings hold."""
    text = _CREDENTIALS.sub(r"\1***@", text)
    secrets = [urlsplit(url).password for url in [*settings.amqp_urls,
                                                  settings.database_url or ""]]
    if settings.api_token is not None:
        secrets.append(settings.api_token.get_secret_value())
    for secret in secrets:
        if secret and len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


def node_of(url: str) -> str:
    parts = urlsplit(url)
    default = 5671 if parts.scheme == "amqps" else 5672
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or default}"


def error_text(exc: BaseException) -> str:
    """One line: SQLAlchemy's messages add a line of background, aio_pika's several."""
    text = str(exc).split("\n(Background on this error")[0]
    text = " ".join(text.split())
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


# -- checks --------------------------------------------------------------------------------


def check_configuration(settings: IntakeSettings, service: str | None) -> list[Finding]:
    from .cli import check_config

    where = str(settings.config)
    try:
        problems = check_config(settings)
    except Exception as exc:
        problems = [error_text(exc)]
    findings = [bad("config", where, problem, "edit the file (`intake config check` "
                    "lists every problem)") for problem in problems]
    if not problems:
        findings.append(ok("config", where, "valid"))
    if service:
        findings.extend(_service_settings(service))
    return findings


def _service_settings(service: str) -> list[Finding]:
    import importlib

    from .ops import CORE_SETTINGS

    try:
        if service in CORE_SETTINGS:
            module, name = CORE_SETTINGS[service]
            getattr(importlib.import_module(module), name)()
        else:
            from .channel import load_channel

            channel = load_channel(service)
            if channel is None:
                raise LookupError(service)
            channel.settings()
    except ValidationError as exc:
        return [bad("settings", service, problem, "set the variable in the service's "
                    "environment") for problem in settings_problems(exc)]
    except (LookupError, ImportError) as exc:
        return [bad("settings", service, f"unknown service ({error_text(exc)})",
                    "name ticket-core, router or a connector (`intake connectors list`)")]
    return [ok("settings", service, "its settings load")]


async def check_broker(settings: IntakeSettings,
                       management_urls: list[str] | None = None) -> list[Finding]:
    import aio_pika

    from .doctor_broker import check_management

    findings: list[Finding] = []
    checked_topology = False
    for url in settings.amqp_urls:
        node = node_of(url)
        try:
            connection = await asyncio.wait_for(aio_pika.connect(
                url, client_properties={"connection_name": "intake-doctor"}), 10)
        except Exception as exc:
            findings.append(bad("broker", node, f"unreachable ({error_text(exc)})",
                                "start that node, or correct INTAKE_AMQP_URL (host, port, "
                                "credentials, virtual host)"))
            continue
        try:
            findings.append(ok("broker", node, "reachable"))
            if not checked_topology:  # one node answers for the cluster's topology
                findings.extend(await _topology(connection, settings, node))
                checked_topology = True
        finally:
            await connection.close()
    if checked_topology:  # members, policies and clocks: from the management API
        findings.extend(await check_management(settings, _expected_queues(settings),
                                               management_urls))
    return findings


def _expected_queues(settings: IntakeSettings) -> list[str]:
    """The core queues and each sender's `outbound.<channel>`, as the code declares them."""
    from .bus.topology import CORE_QUEUES
    from .channel import find_channels

    queues = list(CORE_QUEUES)
    channels, _broken = find_channels()
    queues.extend(f"outbound.{name}" for name, channel in sorted(channels.items())
                  if channel.sender is not None)
    return queues


async def _topology(connection: Any, settings: IntakeSettings, node: str) -> list[Finding]:
    import aiormq

    from .bus.topology import EXCHANGES, Names

    names = Names(settings.bus_prefix)
    fix_missing = ("start the service that declares it (any service declares the exchanges), "
                   "or import deploy/rabbitmq/definitions.json")
    findings: list[Finding] = []
    missing = 0
    for logical in EXCHANGES:
        channel = await connection.channel()
        try:
            await channel.declare_exchange(names(logical), passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            missing += 1
            findings.append(bad("topology", f"{node} exchange {names(logical)}", "missing",
                                fix_missing))
        finally:
            if not channel.is_closed:
                await channel.close()
    for logical in ["dead", *_expected_queues(settings)]:
        channel = await connection.channel()
        name = names(logical)
        try:
            queue = await channel.declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            missing += 1
            findings.append(bad("topology", f"{node} queue {name}", "missing", fix_missing))
            continue
        finally:
            if not channel.is_closed:
                await channel.close()
        result = queue.declaration_result
        if logical != "dead" and not result.consumer_count:
            consumer = "ticket-core" if logical.startswith("ticket_core") else (
                "router" if logical == "router" else logical.removeprefix("outbound."))
            findings.append(bad("consumer", f"{node} queue {name}",
                                f"no consumer ({result.message_count} waiting)",
                                f"start `intake run {consumer}` (or see why it is not ready: "
                                f"`intake health {consumer} --ready`)"))
    if not missing:
        findings.append(ok("topology", node, "every exchange and queue the code declares "
                           "exists"))
    return findings


async def check_database(settings: IntakeSettings) -> list[Finding]:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from ticket_core.db import make_engine

    url = settings.effective_database_url
    where = _database_where(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not await asyncio.to_thread(
            Path(str(parsed.database)).exists):
        return [bad("database", where, "no database file yet",
                    "run `intake migrate` (the ticket core creates it too, at its start)")]
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            current = await connection.run_sync(_current_revision)
            server_now = None
            if connection.dialect.name == "postgresql":
                server_now = (await connection.execute(
                    text("SELECT extract(epoch from now())"))).scalar_one()
    except Exception as exc:
        return [bad("database", where, f"unreachable ({error_text(exc)})",
                    "start the database, or correct INTAKE_DATABASE_URL")]
    finally:
        await engine.dispose()
    findings = [ok("database", where, "reachable")]
    head = _head_revision()
    if current != head:
        findings.append(bad("database", where, f"migrations at {current or 'none'}, the code "
                            f"needs {head}", "run `intake migrate` (before the ticket core)"))
    else:
        findings.append(ok("database", where, f"migrations current ({head})"))
    if server_now is not None:
        skew = abs(float(server_now) - time.time())
        if skew > MAX_CLOCK_SKEW_S:
            findings.append(bad("clock", where, f"the database's clock is {skew:.1f} s off "
                                "this host's", "run NTP (chrony, systemd-timesyncd) on both"))
        else:
            findings.append(ok("clock", where, f"within {MAX_CLOCK_SKEW_S:g} s of this host"))
    return findings


def _database_where(url: str) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return str(parsed.database)
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def _current_revision(connection: Any) -> str | None:
    from alembic.runtime.migration import MigrationContext

    revision: str | None = MigrationContext.configure(connection).get_current_revision()
    return revision


def _head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    from ticket_core.db import alembic_config

    head: str | None = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return head


def check_disk(settings: IntakeSettings) -> list[Finding]:
    folder = settings.data_dir.resolve()
    existing = next((p for p in [folder, *folder.parents] if p.exists()), Path("/"))
    usage = shutil.disk_usage(existing)
    free_gib = usage.free / 1024**3
    if usage.free < MIN_FREE_BYTES or usage.free < usage.total * MIN_FREE_RATIO:
        return [bad("disk", str(folder), f"{free_gib:.2f} GiB free of "
                    f"{usage.total / 1024**3:.1f} GiB", "free space or grow the volume: a full "
                    "disk stops the outbox and blobs (the edges answer 503)")]
    return [ok("disk", str(folder), f"{free_gib:.1f} GiB free")]


def check_outboxes(settings: IntakeSettings) -> list[Finding]:
    from .outbox_files import all_outboxes, describe

    findings: list[Finding] = []
    for path in all_outboxes(settings.data_dir):
        info = describe(path)
        if info.depth < 0:
            findings.append(bad("outbox", str(path), "not a readable outbox",
                                "move the file away; it is not the gateway's"))
        elif info.depth and not info.held:
            findings.append(bad("outbox", str(path), f"{info.depth} message(s) and no running "
                                "instance holds it", f"start `intake run {info.service}` "
                                "(it drains it), or `intake outbox drain`"))
        elif info.depth:
            findings.append(ok("outbox", str(path), f"{info.depth} waiting, its instance is "
                               "running and drains it"))
    if not findings:
        findings.append(ok("outbox", str(settings.data_dir / "outbox"), "nothing waiting"))
    return findings


async def check_blobs(settings: IntakeSettings) -> list[Finding]:
    """A probe written, read back and (on S3, where replicas share the bucket) deleted."""
    from .blobs import blob_store_for

    try:
        store = blob_store_for(settings)
    except ValueError as exc:
        return [bad("blobs", "INTAKE_BLOB_URL", str(exc), "correct the URL")]
    where = getattr(store, "where", str(settings.data_dir / "blobs"))
    s3 = hasattr(store, "delete")
    try:
        try:
            ref = await store.put(PROBE_BLOB)
            same = await store.get(ref) == PROBE_BLOB
            if s3:
                await store.delete(ref)  # type: ignore[union-attr]
        finally:
            await store.close()
    except Exception as exc:
        fix = ("check the bucket exists, the credentials (AWS_*) may write, read and delete "
               "in it, and the endpoint" if s3 else "check the volume's permissions (the "
               "service's user writes there) and free space")
        return [bad("blobs", where, f"cannot write or read ({error_text(exc)})", fix)]
    if not same:
        return [bad("blobs", where, "the probe read back differs", "the store is corrupt: "
                    "restore it from a backup")]
    done = "written, read back and deleted" if s3 else "written and read back"
    return [ok("blobs", where, f"a probe was {done}")]


async def diagnose(settings: IntakeSettings, *, service: str | None = None,
                   database: bool = True,
                   management_urls: list[str] | None = None) -> list[Finding]:
    findings = check_configuration(settings, service)
    findings.extend(await check_broker(settings, management_urls))
    if database:
        findings.extend(await check_database(settings))
    findings.extend(check_disk(settings))
    findings.extend(check_outboxes(settings))
    findings.extend(await check_blobs(settings))
    return findings


def cmd_doctor(args: argparse.Namespace) -> int:
    from .logging import configure_logging

    configure_logging("error")
    try:
        settings = IntakeSettings()
    except ValidationError as exc:
        for problem in settings_problems(exc):
            print(f"PROBLEM settings  environment: {problem}; fix: correct the variable")
        return 1
    management = [url.strip() for url in (args.management_url or "").split(",") if url.strip()]
    findings = asyncio.run(diagnose(settings, service=args.service,
                                    database=not args.no_database,
                                    management_urls=management or None))
    for finding in findings:
        print(redact(finding.line(), settings))
    problems = sum(finding.problem for finding in findings)
    print(redact(f"{problems} problem(s)" if problems else "no problems found", settings),
          file=sys.stderr)
    return 1 if problems else 0
