"""The gateway as production runs it: one `intake run <service>` process per service.

Also the database it writes to (a fresh SQLite file or PostgreSQL database per run, dropped
after), the RSS sampler (VmRSS from /proc every 100 ms) and the optional py-spy recorders.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from intake.bus import CORE_QUEUES, EXCHANGES, Names

REPO = Path(__file__).resolve().parent.parent
SERVICES = ("ticket-core", "router", "webform")  # every connector found is added (see start)
PG_SERVER = os.environ.get("INTAKE_BENCH_POSTGRES",
                           "postgresql+asyncpg://postgres@127.0.0.1:5432").rstrip("/")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def intake_command() -> list[str]:
    """`.venv/bin/intake` beside the running interpreter, as `make install` leaves it."""
    script = Path(sys.executable).parent / "intake"
    return [str(script)] if script.exists() else [sys.executable, "-m", "intake.cli"]


def read_rss_mb(pid: int) -> float | None:
    """The process's resident set (VmRSS) in MB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


_TICKS = os.sysconf("SC_CLK_TCK")


def read_cpu_s(pid: int) -> float | None:
    """User plus system CPU seconds the process has used (all its threads), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
    except (OSError, ValueError, IndexError):
        return None


def broker_pid() -> int | None:
    """The local RabbitMQ node's Erlang VM (beam.smp), so its CPU share can be shown too."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "beam.smp" and b"rabbit" in (
                        entry / "cmdline").read_bytes():
                    return int(entry.name)
    return None


async def roll_broker_log() -> bool:
    """Start the local broker's quorum-queue log (Ra's WAL) afresh; False if that cannot be done.

    The WAL rolls over every 512 MB, and then the node writes every queue's entries out to
    segment files: hundreds of milliseconds in which confirms and deliveries stall. A full
    `make bench` writes about that much, so a rollover used to land in a random scenario and
    set its p99 (an open loop measured 40 ms or 400 ms for it). Rolled over before each timed
    scenario (and that work waited out), no scenario of a few hundred MB meets one. In long
    production runs the stall recurs every 512 MB of log; README's performance section says so.
    """
    ctl = shutil.which("rabbitmqctl")
    if ctl is None or broker_pid() is None:
        return False
    try:
        process = await asyncio.create_subprocess_exec(
            ctl, "eval", "ra_log_wal:force_roll_over(ra_log_wal).",
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    except (OSError, TimeoutError):
        return False
    return process.returncode == 0 and output.strip().endswith(b"ok")


# -- the database --------------------------------------------------------------------------


async def _pg_admin(statement: str) -> None:
    engine = create_async_engine(f"{PG_SERVER}/test", isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@dataclass
class Database:
    kind: str  # sqlite or postgres
    url: str
    name: str | None = None

    @classmethod
    async def create(cls, kind: str, data_dir: Path, run_id: str) -> Database:
        if kind == "sqlite":
            return cls("sqlite", f"sqlite+aiosqlite:///{data_dir}/intake.sqlite3")  # absolute
        if kind == "postgres":
            name = f"intake_bench_{run_id}"
            await asyncio.wait_for(_pg_admin(f'CREATE DATABASE "{name}"'), 15)
            return cls("postgres", f"{PG_SERVER}/{name}", name)
        raise ValueError(f"DB={kind}: use sqlite or postgres")

    async def version(self) -> str:
        if self.kind == "sqlite":
            import sqlite3
            return f"SQLite {sqlite3.sqlite_version}"
        engine = create_async_engine(self.url)
        try:
            async with engine.connect() as connection:
                return "PostgreSQL " + str(
                    (await connection.execute(text("SHOW server_version"))).scalar_one())
        finally:
            await engine.dispose()

    async def drop(self) -> None:
        if self.name:
            await _pg_admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# -- the services --------------------------------------------------------------------------


@dataclass
class Process:
    service: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    profiler: subprocess.Popen[bytes] | None = None


@dataclass
class Gateway:
    """Starts and stops the services; every process gets the run's prefix, ports and database."""

    prefix: str
    database: Database
    data_dir: Path
    out_dir: Path
    profile: bool = False
    services: tuple[str, ...] = SERVICES
    ports: dict[str, int] = field(default_factory=dict)
    running: dict[str, Process] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)
    profiles: list[str] = field(default_factory=list)
    token: str = "bench-token"
    # Set by a scenario for the services it starts next (the router-service customer line's
    # INTAKE_RULES), and removed by it afterwards.
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for service in self.services:
            self.ports.setdefault(service, free_port())
        if "email" in self.services:  # its SMTP listener: INTAKE_EMAIL_SMTP_PORT
            self.ports.setdefault("email-smtp", free_port())

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def faq_dir(self) -> Path:
        """The SDK's FAQ folder: a copy of the shipped one, which `sdk-faq` adds articles to."""
        folder = self.data_dir / "faq"
        if not folder.is_dir():
            shutil.copytree(REPO / "deploy" / "faq", folder)
        return folder

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "INTAKE_BUS_PREFIX": self.prefix,
            "INTAKE_DATA_DIR": str(self.data_dir),
            "INTAKE_DATABASE_URL": self.database.url,
            "INTAKE_API_TOKEN": self.token,
            "INTAKE_LOG_LEVEL": env.get("INTAKE_BENCH_LOG_LEVEL", "warning"),
            # All load comes from 127.0.0.1: the per-address limit would refuse it.
            "INTAKE_WEBFORM_RATE_LIMIT_BURST": "100000000",
            "INTAKE_WEBFORM_RATE_LIMIT_PER_MINUTE": "100000000",
            "INTAKE_EMAIL_MAX_SESSIONS_PER_CLIENT": "10000",
            "INTAKE_EMAIL_MAX_SESSIONS": "10000",
            "INTAKE_SDK_RATE_LIMIT_SCALE": "1000000",
        })
        for service, port in self.ports.items():
            env[f"INTAKE_{service.upper().replace('-', '_')}_PORT"] = str(port)
        env["INTAKE_WEBFORM_PUBLIC_URL"] = self.url("webform")
        env["INTAKE_SDK_FAQ_DIR"] = str(self.faq_dir)
        env.update(self.extra_env)
        return env

    async def start(self, *names: str, timeout: float = 60.0) -> None:
        """Start the named services (all when none named) and wait for their /readyz."""
        wanted = [n for n in (names or self.services) if n not in self.running]
        for name in wanted:
            count = self.starts.get(name, 0) + 1
            self.starts[name] = count
            suffix = "" if count == 1 else f"-{count}"
            log_path = self.out_dir / f"{name}{suffix}.log"
            # Starting a process takes a millisecond; the benchmark measures nothing meanwhile.
            with open(log_path, "wb") as log:  # noqa: ASYNC230
                popen = subprocess.Popen(  # noqa: ASYNC220
                    [*intake_command(), "run", name], env=self.env(), cwd=REPO, stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            process = Process(name, popen, log_path)
            if self.profile:
                process.profiler = self._record(name, popen.pid, suffix)
            self.running[name] = process
        await asyncio.gather(*(self._wait_ready(n, timeout) for n in wanted))

    def _record(self, name: str, pid: int, suffix: str) -> subprocess.Popen[bytes] | None:
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy")
        if spy is None:
            print("PROFILE=1 but py-spy is not installed (make bench installs it)",
                  file=sys.stderr)
            return None
        svg = self.out_dir / f"{name}{suffix}.svg"
        self.profiles.append(str(svg))
        raw = bool(os.environ.get("INTAKE_BENCH_PROFILE_RAW"))
        return subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--rate", "200", "--nonblocking",
             *(["--gil"] if raw else []),
             # INTAKE_BENCH_PROFILE_RAW=1: collapsed stacks (.txt) for scripts instead of SVG
             *(["--format", "raw", "--output", str(svg.with_suffix(".txt"))]
               if raw else ["--format", "flamegraph", "--output", str(svg)])],
            stdout=subprocess.DEVNULL, stderr=open(self.out_dir / f"{name}{suffix}.py-spy.log",
                                                   "wb"))

    async def _wait_ready(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        process = self.running[name]
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if process.popen.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.popen.returncode}: "
                                       f"{process.log_path.read_text()[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(f"{self.url(name)}/readyz") as response:
                        # A connector is ready while its outbox takes messages; the benchmark
                        # also waits for its broker connection, or the first requests would
                        # measure the outbox.
                        if response.status == 200 and (
                                await response.json()).get("broker", "up") == "up":
                            return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{name} not ready within {timeout} s; see {process.log_path}")

    async def stop(self, *names: str, timeout: float = 60.0) -> None:
        """SIGTERM (graceful: in-flight work finishes), then wait; all when none named."""
        targets = [self.running.pop(n) for n in (names or list(self.running))
                   if n in self.running]
        for process in targets:
            with contextlib.suppress(ProcessLookupError):
                process.popen.send_signal(signal.SIGTERM)
        for process in targets:
            try:
                await asyncio.to_thread(process.popen.wait, timeout)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                await asyncio.to_thread(process.popen.wait)
            if process.profiler is not None:
                # py-spy writes the flame graph once its target has exited.
                try:
                    await asyncio.to_thread(process.profiler.wait, 30)
                except subprocess.TimeoutExpired:
                    process.profiler.send_signal(signal.SIGINT)
                    await asyncio.to_thread(process.profiler.wait)

    def pids(self) -> dict[str, int]:
        return {name: p.popen.pid for name, p in self.running.items()}


class RssSampler:
    """Samples VmRSS of every running service; `peaks()` since the last `reset()`.

    It also notes the CPU time each service, the broker and the load generator (this process)
    used since `reset()`: `cpu_ms_per_message(n)` says where the machine's two cores went.
    """

    def __init__(self, gateway: Gateway, interval_s: float = 0.1) -> None:
        self.gateway = gateway
        self.interval_s = interval_s
        self._peaks: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._broker = broker_pid()
        self._cpu_start: dict[str, float] = {}

    def _cpu_now(self) -> dict[str, float]:
        pids = dict(self.gateway.pids())
        if self._broker:
            pids["rabbitmq"] = self._broker
        now = {name: cpu for name, pid in pids.items() if (cpu := read_cpu_s(pid)) is not None}
        times = os.times()
        now["load"] = times.user + times.system
        return now

    def reset(self) -> None:
        self._peaks = {}
        self._cpu_start = self._cpu_now()

    async def wait_quiet(self, busy_share: float = 0.1, window_s: float = 0.5,
                         timeout_s: float = 20.0) -> float:
        """Wait until the services and the broker together use under `busy_share` of a core
        over `window_s` (or `timeout_s` passed); returns the seconds waited."""
        began = time.monotonic()
        while time.monotonic() - began < timeout_s:
            before = self._cpu_now()
            before.pop("load", None)
            await asyncio.sleep(window_s)
            after = self._cpu_now()
            used = sum(after[name] - value for name, value in before.items() if name in after)
            if used < busy_share * window_s:
                break
        return time.monotonic() - began

    def cpu_ms_per_message(self, messages: int) -> dict[str, float]:
        """CPU milliseconds per message of each process since `reset()`, and their total."""
        now = self._cpu_now()
        used = {name: (now[name] - start) * 1000 / max(messages, 1)
                for name, start in self._cpu_start.items() if name in now}
        used["total"] = sum(used.values())
        return {name: round(value, 3) for name, value in used.items()}

    def sample(self) -> None:
        for name, pid in self.gateway.pids().items():
            rss = read_rss_mb(pid)
            if rss is not None:
                self.last[name] = rss
                self._peaks[name] = max(self._peaks.get(name, 0.0), rss)

    def peaks(self) -> dict[str, float]:
        self.sample()
        return {name: round(value, 1) for name, value in sorted(self._peaks.items())}

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def delete_topology(url: str, prefix: str, extra_queues: Iterable[str] = ()) -> None:
    """Remove every exchange and queue of this run's prefix from the shared broker."""
    import aio_pika

    names = Names(prefix)
    queues = [names(q) for q in (*CORE_QUEUES, "dead", "outbound.webform")] + list(extra_queues)
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        for queue in queues:
            try:
                await channel.queue_delete(queue)
            except Exception:
                channel = await connection.channel()
        for exchange in EXCHANGES:
            try:
                await channel.exchange_delete(names(exchange))
            except Exception:
                channel = await connection.channel()
    finally:
        await connection.close()
