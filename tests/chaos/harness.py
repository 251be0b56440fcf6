"""The chaos harness: a RabbitMQ node and a PostgreSQL of its own, the gateway as processes.

Everything here can be stopped, killed and restarted without touching the machine's shared
broker or database: the node listens on its own port with its own data folder, PostgreSQL runs
from its own `initdb` folder, and the services are `intake run …` subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

REPO = Path(__file__).resolve().parents[2]
INTAKE = REPO / ".venv" / "bin" / "intake"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQCTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
RABBITMQ_HOME = "/var/lib/rabbitmq"  # holds the Erlang cookie rabbitmqctl needs
SERVICES = ("ticket-core", "router", "webform")
FORM = "contact"


class HarnessUnavailable(RuntimeError):
    """Something the harness needs (a binary, root) is missing on this machine."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _owned_tempdir(prefix: str, user: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    shutil.chown(path, user, user)
    path.chmod(0o700)
    return path


def check_prerequisites() -> None:
    """Raise HarnessUnavailable naming what is missing."""
    if os.geteuid() != 0:
        raise HarnessUnavailable("the chaos harness runs its own RabbitMQ and PostgreSQL as "
                                 "their users and mounts a tmpfs: run it as root")
    if not os.access(RABBITMQ_SERVER, os.X_OK):
        raise HarnessUnavailable(f"{RABBITMQ_SERVER} missing (apt-get install rabbitmq-server)")
    if not postgres_bin_dir():
        raise HarnessUnavailable("initdb/pg_ctl missing under /usr/lib/postgresql/*/bin "
                                 "(apt-get install postgresql)")
    if not INTAKE.exists():
        raise HarnessUnavailable(f"{INTAKE} missing (run `make install`)")


# -- RabbitMQ ------------------------------------------------------------------------------


class RabbitNode:
    """A RabbitMQ node of its own: own port, data folder and node name, restartable in place.

    The system's rabbitmq.conf pins 5672 and RABBITMQ_NODE_PORT does not override it, so the
    node gets its own config file with `listeners.tcp.local`. A restart reuses the port and the
    mnesia folder, so durable quorum queues and their messages survive.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.dist_port = free_port()
        self.base = _owned_tempdir("intake-chaos-rmq-", "rabbitmq")
        self.node = f"chaos{self.port}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "disk_free_limit.absolute = 50MB\n"
            "log.console = false\n"
            "log.file.level = warning\n")
        (self.base / "enabled_plugins").write_text("[].\n")
        for path in (self.base / "rabbitmq.conf", self.base / "enabled_plugins"):
            shutil.chown(path, "rabbitmq", "rabbitmq")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RABBITMQ_")}
        env.update({
            "HOME": RABBITMQ_HOME,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.base / "beam.pid"),
        })
        return env

    def start(self, timeout: float = 90.0, *, memory_alarm: bool = False) -> None:
        """Start (again, on the same port and data); `memory_alarm` boots it blocking publishers.

        With the alarm, clients connect and consume, but the broker stops reading from any
        connection that publishes until `clear_memory_alarm`: publishes hang unconfirmed.
        """
        config = self.base / "rabbitmq.conf"
        plain = config.read_text()
        if memory_alarm:  # the node needs far more: it boots with its memory alarm raised
            config.write_text(plain + "vm_memory_high_watermark.absolute = 1MB\n")
        (self.base / "beam.pid").unlink(missing_ok=True)
        log = open(self.base / "server.out", "ab")
        self.proc = subprocess.Popen(
            [RABBITMQ_SERVER], env=self._env(), cwd=self.base, user="rabbitmq",
            group="rabbitmq", extra_groups=[], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        try:
            self.wait_ready(timeout)
        finally:
            config.write_text(plain)  # the alarm lasts for this boot only

    def clear_memory_alarm(self) -> None:
        result = self.ctl("set_vm_memory_high_watermark", "0.4")
        if result.returncode != 0:
            raise RuntimeError(f"cannot clear the memory alarm: {result.stderr}")

    def delete_queue(self, name: str) -> str:
        """`rabbitmqctl delete_queue NAME`, as an operator would; returns what it printed."""
        result = self.ctl("delete_queue", name)
        if result.returncode != 0:
            raise RuntimeError(f"delete_queue {name} failed: {result.stdout}{result.stderr}")
        return result.stdout.strip()

    def ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RABBITMQCTL, "-n", self.node, *args], env=self._env(), user="rabbitmq",
            group="rabbitmq", extra_groups=[], capture_output=True, text=True,
            timeout=timeout, check=False, cwd=self.base)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"RabbitMQ node exited at start; see {self.base}/server.out "
                                   f"and {self.base}/log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
            except OSError:
                time.sleep(0.2)
                continue
            # The port opens before the node has finished booting (queues recovered).
            result = self.ctl("await_startup", "--timeout", str(max(1, int(timeout))))
            if result.returncode == 0:
                return
            time.sleep(0.5)
        raise TimeoutError(f"RabbitMQ node {self.node} not ready after {timeout} s")

    def beam_pid(self) -> int:
        return int((self.base / "beam.pid").read_text().strip())

    def stop(self) -> None:
        """Graceful: `rabbitmqctl shutdown` (queues are flushed and closed)."""
        self.ctl("shutdown", timeout=120)
        self._reap()

    def kill(self) -> None:
        """kill -9 of the Erlang VM: no flush, no goodbye to clients."""
        with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
            os.kill(self.beam_pid(), signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            self.proc = None
        # Wait until the port is closed, so a restart binds it again.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    time.sleep(0.2)
            except OSError:
                return

    def destroy(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        shutil.rmtree(self.base, ignore_errors=True)


# -- PostgreSQL ----------------------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(found[-1]).parent if found else None


class PostgresNode:
    """A PostgreSQL cluster of its own (initdb in a temporary folder), on its own port."""

    def __init__(self) -> None:
        bindir = postgres_bin_dir()
        if bindir is None:
            raise HarnessUnavailable("initdb not found under /usr/lib/postgresql/*/bin")
        self.bin = bindir
        self.port = free_port()
        self.base = _owned_tempdir("intake-chaos-pg-", "postgres")
        self.data = self.base / "data"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        result = subprocess.run([str(self.bin / tool), *args], user="postgres", group="postgres",
                                extra_groups=[], capture_output=True, text=True, cwd=self.base,
                                timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed: {result.stdout}{result.stderr}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "server.log"), "-w",
                  "-t", "60", "-o",
                  f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
                  "-c max_connections=100", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def kill(self) -> None:
        """SIGKILL the postmaster (crash recovery at the next start)."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        # The children notice the postmaster is gone and exit; wait for the port to free.
        time.sleep(1)

    async def create_database(self, name: str) -> str:
        engine = create_async_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            await engine.dispose()
        return self.url(name)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


# -- the gateway's services ------------------------------------------------------------------


class ServiceProcess:
    """One `intake run <name>` subprocess that a scenario can kill, stop and start again."""

    def __init__(self, name: str, env: dict[str, str], port: int, log: Path) -> None:
        self.name = name
        self.env = env
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exits: list[int] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([str(INTAKE), "run", self.name], env=self.env,
                                         cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reap(self) -> int | None:
        """If the process has exited, record its code and forget it."""
        if self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            self.exits.append(code)
            self.proc = None
            return code
        return None

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.reap()

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the graceful exit; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        code = self.proc.returncode
        self.reap()
        return code

    async def wait_healthy(self, http: aiohttp.ClientSession, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} at start; "
                                   f"see {self.log}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with http.get(f"{self.base}/healthz",
                                    timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not healthy after {timeout} s; see {self.log}")

    async def ready_body(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        """`/readyz`'s JSON (with `status_code`), or {} while the service does not answer."""
        try:
            async with http.get(f"{self.base}/readyz",
                                timeout=aiohttp.ClientTimeout(total=8)) as response:
                body = await response.json(content_type=None)
                return {**body, "status_code": response.status}
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return {}

    async def readyz(self, http: aiohttp.ClientSession) -> int:
        try:
            async with http.get(f"{self.base}/readyz",
                                timeout=aiohttp.ClientTimeout(total=8)) as response:
                return response.status
        except (aiohttp.ClientError, OSError, TimeoutError):
            return 0


class Gateway:
    """Ticket core, router and web form as processes on one broker node and one database."""

    def __init__(self, workdir: Path, amqp_url: str, database_url: str, prefix: str,
                 fault: dict[str, str] | None = None,
                 webform_data_dir: Path | None = None,
                 services: tuple[str, ...] = SERVICES,
                 env: dict[str, str] | None = None) -> None:
        """`services` adds a connector's service to the three; `env` adds its settings."""
        self.workdir = workdir
        self.names = services
        self.token = uuid.uuid4().hex
        self.prefix = prefix
        self.amqp_url = amqp_url
        self.database_url = database_url
        ports = {name: free_port() for name in services}
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("INTAKE_")}
        base_env.update({
            "INTAKE_AMQP_URL": amqp_url,
            "INTAKE_BUS_PREFIX": prefix,
            "INTAKE_DATABASE_URL": database_url,
            "INTAKE_API_TOKEN": self.token,
            "INTAKE_LOG_LEVEL": os.environ.get("CHAOS_LOG_LEVEL", "warning"),
            "INTAKE_TEST_HARNESS": "1",  # allows INTAKE_FAULT (refused anywhere else)
            "INTAKE_TICKET_CORE_PORT": str(ports["ticket-core"]),
            "INTAKE_ROUTER_PORT": str(ports["router"]),
            "INTAKE_WEBFORM_PORT": str(ports["webform"]),
            "INTAKE_WEBFORM_PUBLIC_URL": f"http://127.0.0.1:{ports['webform']}",
            "INTAKE_TICKET_CORE_URL": f"http://127.0.0.1:{ports['ticket-core']}",
            # One client address sends everything here; the rate limit has its own tests.
            "INTAKE_WEBFORM_RATE_LIMIT_BURST": "100000000",
            "INTAKE_WEBFORM_RATE_LIMIT_PER_MINUTE": "100000000",
        })
        for name, port in ports.items():
            variable = name.upper().replace("-", "_")
            base_env.setdefault(f"INTAKE_{variable}_PORT", str(port))
        base_env.update(env or {})
        self.services: dict[str, ServiceProcess] = {}
        for name in services:
            env = dict(base_env)
            data_dir = workdir / name
            if name == "webform" and webform_data_dir is not None:
                data_dir = webform_data_dir
            data_dir.mkdir(parents=True, exist_ok=True)
            env["INTAKE_DATA_DIR"] = str(data_dir)
            if fault and name in fault:
                env["INTAKE_FAULT"] = fault[name]
            self.services[name] = ServiceProcess(name, env, ports[name],
                                                 workdir / f"{name}.log")
        self._supervisor: asyncio.Task[None] | None = None
        self.crashes: Counter[str] = Counter()

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.services[name]

    @property
    def form_url(self) -> str:
        return f"{self.services['webform'].base}/forms/{FORM}/submissions"

    async def start(self, http: aiohttp.ClientSession,
                    names: tuple[str, ...] | None = None) -> None:
        names = self.names if names is None else names
        for name in names:
            self.services[name].start()
        await asyncio.gather(*(self.services[name].wait_healthy(http) for name in names))

    def supervise(self, http: aiohttp.ClientSession) -> None:
        """Restart any service that exits on its own (a crash hook, an OOM), as systemd would."""
        async def loop() -> None:
            while True:
                await asyncio.sleep(0.2)
                for name, service in self.services.items():
                    code = service.reap()
                    if code is not None:
                        self.crashes[name] += 1
                        service.start()
        self._supervisor = asyncio.create_task(loop(), name="supervise")

    async def unsupervise(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None

    async def restart(self, http: aiohttp.ClientSession, name: str, *, kill: bool = True) -> None:
        service = self.services[name]
        if kill:
            service.kill()
        else:
            service.terminate()
        service.start()
        await service.wait_healthy(http)

    async def stop(self) -> dict[str, float]:
        """SIGTERM to every service at once; returns how long each took to exit."""
        await self.unsupervise()

        def stop_one(service: ServiceProcess) -> float:
            began = time.monotonic()
            if service.alive():
                service.terminate()
            return round(time.monotonic() - began, 2)

        took = await asyncio.gather(*(asyncio.to_thread(stop_one, s)
                                      for s in self.services.values()))
        return dict(zip(self.services, took, strict=True))


# -- load --------------------------------------------------------------------------------


@dataclass
class Submission:
    key: str
    started: float  # wall clock of the first attempt
    attempts: int = 0
    accepted_at: float | None = None
    statuses: list[int] = field(default_factory=list)


class LoadDriver:
    """Posts form submissions as a real client would: retry until 2xx, same Idempotency-Key.

    A 5xx, a 429 or a connection error means "not accepted"; the client tries again after a
    short pause. Only a 2xx counts as accepted: those keys must each end as one message.
    """

    def __init__(self, gateway: Gateway, run_id: str, count: int, *, concurrency: int = 24,
                 rate: float | None = None, give_up_s: float = 300.0) -> None:
        self.gateway = gateway
        self.run_id = run_id
        self.count = count
        self.concurrency = concurrency
        self.rate = rate  # submissions started per second; None = as fast as answered
        self.give_up_s = give_up_s
        self._progress = asyncio.Event()
        self.submissions: dict[str, Submission] = {}
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.sent = 0
        self.accepted_count = 0
        self.paused = asyncio.Event()
        self.paused.set()  # set = running
        self.done = asyncio.Event()

    def header_key(self, index: int) -> str:
        return f"{self.run_id}-{index:06d}"

    def message_key(self, header_key: str) -> str:
        return f"webform:{FORM}:{header_key}"

    @property
    def accepted(self) -> dict[str, Submission]:
        return {self.message_key(k): s for k, s in self.submissions.items()
                if s.accepted_at is not None}

    def body(self, index: int) -> dict[str, Any]:
        topics = ("enquiry", "after_sales", "complaint", "suggestion")
        return {"name": f"Chaos {index}", "email": f"c{index}.{self.run_id}@chaos.example",
                "topic": topics[index % len(topics)], "subject": f"chaos {index}",
                "message": f"chaos submission {index} of run {self.run_id}", "consent": True}

    async def run(self, http: aiohttp.ClientSession) -> None:
        indexes: asyncio.Queue[int] = asyncio.Queue()
        for index in range(self.count):
            indexes.put_nowait(index)

        began = time.monotonic()

        async def worker() -> None:
            while True:
                try:
                    index = indexes.get_nowait()
                except asyncio.QueueEmpty:
                    return
                if self.rate:
                    await asyncio.sleep(max(0.0, began + index / self.rate - time.monotonic()))
                await self.submit(http, index)

        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        self.done.set()
        self._progress.set()

    async def submit(self, http: aiohttp.ClientSession, index: int) -> None:
        sub = self.start(self.header_key(index))
        body = self.body(index)

        async def post() -> int:
            async with http.post(self.gateway.form_url, json=body,
                                 headers={"Idempotency-Key": sub.key},
                                 timeout=aiohttp.ClientTimeout(total=30)) as response:
                await response.read()
                return response.status

        if await self.deliver(sub, post):
            self.accept(sub)

    def start(self, key: str) -> Submission:
        sub = self.submissions[key] = Submission(key=key, started=time.time())
        self.sent += 1
        return sub

    def accept(self, sub: Submission) -> None:
        sub.accepted_at = time.time()
        self.accepted_count += 1
        self._progress.set()

    async def deliver(self, sub: Submission, post: Callable[[], Awaitable[int]]) -> bool:
        """`post()` (one request, its status) again after a short growing pause until a 2xx
        (True), as a real client does; False once `give_up_s` passed since `sub` started.
        A connection error counts as status 0."""
        pause = 0.05
        while time.time() - sub.started < self.give_up_s:
            await self.paused.wait()
            sub.attempts += 1
            try:
                status = await post()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.errors[exc.__class__.__name__] += 1
                status = 0
            self.statuses[status] += 1
            sub.statuses.append(status)
            if 200 <= status < 300:
                return True
            await asyncio.sleep(pause + random.random() * pause)
            pause = min(pause * 2, 1.0)
        return False

    async def reached(self, fraction: float) -> None:
        """Wait until this share of the stream is accepted (or the stream is over)."""
        while self.accepted_count < fraction * self.count and not self.done.is_set():
            self._progress.clear()
            await self._progress.wait()


# -- the check ---------------------------------------------------------------------------


@dataclass
class Outcome:
    """What the database holds for a run's keys, against what the clients were told."""

    sent: int
    accepted: int
    persisted: int
    lost: int
    duplicated_messages: int
    duplicated_tickets: int
    unexpected: int
    longest_s: float
    p99_s: float
    lost_keys: list[str]

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["lost_keys"] = self.lost_keys[:20]
        return data


async def read_persisted(database_url: str, like: str) -> list[tuple[str, str, datetime]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text(
                "SELECT idempotency_key, ticket_id, persisted_at FROM messages"
                " WHERE idempotency_key LIKE :like"), {"like": like})
            return [(r[0], r[1], r[2]) for r in rows]
    finally:
        await engine.dispose()


async def count_tickets(database_url: str) -> int:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT count(*) FROM tickets"))).scalar_one())
    finally:
        await engine.dispose()


async def read_marked(database_url: str, run_id: str) -> list[tuple[int, str]]:
    """(submission index, ticket id) of every stored message carrying a run's content marker.

    Found by the text each submission carries (`LoadDriver.body`), not by idempotency key:
    the unique key already forbids two rows per key, so counting rows per key can never show
    a duplicate. A submission stored twice under two keys (a key made up again on a retry,
    say) shows here.
    """
    marker = re.compile(rf"chaos submission (\d+) of run {re.escape(run_id)}\b")
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text(
                "SELECT text, ticket_id FROM messages WHERE text LIKE :like"),
                {"like": f"%of run {run_id}%"})
            found = []
            for body, ticket in rows:
                match = marker.search(body or "")
                if match:
                    found.append((int(match.group(1)), str(ticket)))
            return found
    finally:
        await engine.dispose()


async def check(driver: LoadDriver, database_url: str, *, extra_tickets: int = 0) -> Outcome:
    """Lost by idempotency key; duplicated by content: messages per marker, tickets per one.

    Each accepted key must be stored; each submission's marker must be in one message and
    that message in a ticket of its own.
    """
    rows = await read_persisted(database_url, driver.message_key(f"{driver.run_id}-%"))
    per_key = Counter(key for key, _, _ in rows)
    accepted = driver.accepted
    lost = sorted(set(accepted) - set(per_key))
    marked = await read_marked(database_url, driver.run_id)
    per_marker = Counter(index for index, _ in marked)
    duplicated_messages = sum(n - 1 for n in per_marker.values() if n > 1)
    tickets = await count_tickets(database_url)
    markers_per_ticket: dict[str, set[int]] = {}
    for index, ticket in marked:
        markers_per_ticket.setdefault(ticket, set()).add(index)
    shared = sum(len(indexes) - 1 for indexes in markers_per_ticket.values())
    # Each submission is its own ticket here: more tickets than submissions stored, or two
    # submissions in one ticket, is a duplicate (or a wrong join).
    duplicated_tickets = max(0, tickets - extra_tickets - len(per_marker)) + shared
    # A key persisted though its client never saw a 2xx (the answer was lost): not an error.
    unexpected = len(set(per_key) - set(accepted))
    latencies = sorted(persisted.timestamp() - accepted[key].started
                       for key, _, persisted in rows if key in accepted)
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0
    return Outcome(sent=driver.sent, accepted=len(accepted), persisted=len(per_key),
                   lost=len(lost), duplicated_messages=duplicated_messages,
                   duplicated_tickets=duplicated_tickets, unexpected=unexpected,
                   longest_s=round(latencies[-1], 3) if latencies else 0.0,
                   p99_s=round(p99, 3), lost_keys=lost)


async def wait_persisted(driver: LoadDriver, database_url: str, timeout: float) -> None:
    """Poll until every accepted key is in the database (or the time is up)."""
    wanted = set(driver.accepted)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = await read_persisted(database_url, driver.message_key(f"{driver.run_id}-%"))
        if wanted <= {key for key, _, _ in rows}:
            return
        await asyncio.sleep(0.3)


async def dead_letters(amqp_url: str, prefix: str) -> list[Any]:
    from intake.bus import Bus
    from intake.errors import BrokerUnavailable
    from intake.settings import IntakeSettings

    # On a cluster, a node just restarted serves no stream consumer until its stream member is
    # back: connect again (each connection starts at a random node) until one answers.
    deadline = time.monotonic() + 90
    while True:
        bus = Bus(IntakeSettings(amqp_url=amqp_url, bus_prefix=prefix), "chaos-check")
        await bus.connect(timeout=30)
        try:
            return await bus.browse_dead(None, replayed=True)  # every letter, replayed or not
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                raise
        finally:
            await bus.close()
        await asyncio.sleep(1)


async def queue_depths(amqp_url: str, prefix: str) -> dict[str, int]:
    import aio_pika

    connection = await aio_pika.connect(amqp_url)
    depths = {}
    try:
        channel = await connection.channel()
        for logical in ("router", "ticket_core"):
            queue = await channel.declare_queue(f"{prefix}.intake.{logical}", passive=True)
            depths[logical] = queue.declaration_result.message_count or 0
    finally:
        await connection.close()
    return depths
