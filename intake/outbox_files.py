"""Where the outboxes live and who owns them: one file per instance, each under a file lock.

Replicas of a connector may share `INTAKE_DATA_DIR` (a compose volume, one host), so each
instance writes its own `outbox/<service>-<instance>.sqlite3` (`INTAKE_INSTANCE_ID`) and holds
an exclusive lock on it (`<same name>.lock`, `flock`) while it runs. The outboxes of its
service that nobody holds belong to an instance that crashed or was scaled down (or to a
version before instance names, `outbox/<service>.sqlite3`): any running instance of the service
takes the lock and drains them, then removes the empty file. `intake outbox drain` does the
same by hand, for every service. The lock dies with its process, so a crash never leaves an
outbox locked.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bus import Bus
from .errors import SettingInvalid
from .logging import get_logger
from .outbox import Outbox, Publisher

SUFFIX = ".sqlite3"
# How often a running instance looks for outboxes left by others.
ORPHAN_SCAN_S = 30.0


def outbox_dir(data_dir: Path) -> Path:
    return data_dir / "outbox"


def outbox_path(data_dir: Path, service: str, instance: str) -> Path:
    return outbox_dir(data_dir) / f"{service}-{instance}{SUFFIX}"


def lock_path(outbox: Path) -> Path:
    return outbox.with_suffix(".lock")


def service_of(outbox: Path) -> str:
    """The service an outbox file belongs to: `webform-host1.sqlite3` → `webform`."""
    return outbox.name.removesuffix(SUFFIX).split("-", 1)[0]


def service_outboxes(data_dir: Path, service: str) -> list[Path]:
    """Every outbox file of `service`: per instance, and the name before instances."""
    folder = outbox_dir(data_dir)
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.glob(f"*{SUFFIX}") if service_of(path) == service)


def all_outboxes(data_dir: Path) -> list[Path]:
    folder = outbox_dir(data_dir)
    return sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []


class OutboxLock:
    """An exclusive, non-blocking `flock` on an outbox's lock file; released at `release`
    or when the process ends, whatever way it ends."""

    def __init__(self, outbox: Path) -> None:
        self.path = lock_path(outbox)
        self._fd: int | None = None

    def acquire(self) -> bool:
        """True once held; False when another process (or this one) holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            # The holder before us may have removed the file after its drain: a lock on the
            # unlinked file guards nothing, so lock the file that is there now.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return True
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def held_by_someone(outbox: Path) -> bool:
    """Whether a running instance holds this outbox (tested by trying its lock)."""
    lock = OutboxLock(outbox)
    if lock.acquire():
        lock.release()
        return False
    return True


def remove_outbox(outbox: Path) -> None:
    """An empty outbox's files; the lock file last (its holder is the caller)."""
    for path in (outbox, Path(f"{outbox}-wal"), Path(f"{outbox}-shm"), lock_path(outbox)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@dataclass(frozen=True)
class OutboxInfo:
    path: Path
    service: str
    depth: int
    held: bool


def describe(outbox: Path) -> OutboxInfo:
    """What `intake outbox list` shows: its depth read without taking the lock."""
    import sqlite3

    connection = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    try:
        depth = int(connection.execute("SELECT count(*) FROM outbox").fetchone()[0])
    except sqlite3.Error:
        depth = -1  # not an outbox, or unreadable: shown as such
    finally:
        connection.close()
    return OutboxInfo(outbox, service_of(outbox), depth, held_by_someone(outbox))


@contextlib.contextmanager
def own_outbox(data_dir: Path, service: str, instance: str) -> Iterator[Outbox]:
    """This instance's outbox, locked for as long as it is open.

    Raises `SettingInvalid` when another running process holds it: two replicas with one
    `INTAKE_INSTANCE_ID` on one volume would write one file.
    """
    path = outbox_path(data_dir, service, instance)
    lock = OutboxLock(path)
    if not lock.acquire():
        raise SettingInvalid(
            f"INTAKE_INSTANCE_ID: the outbox {path} is held by another running process; give "
            "each replica sharing INTAKE_DATA_DIR its own INTAKE_INSTANCE_ID")
    try:
        outbox = Outbox(path)
        try:
            yield outbox
        finally:
            outbox.close()
    finally:
        lock.release()


async def drain_unheld(bus: Bus, outboxes: list[Path], log: Any | None = None) -> int:
    """Drain every outbox of `outboxes` that no running instance holds; returns how many
    messages went out. An emptied outbox is removed; one that fails stays for the next try."""
    sent = 0
    for path in outboxes:
        if not bus.connected:
            break
        lock = OutboxLock(path)
        if not lock.acquire():
            continue
        try:
            if not path.exists():  # drained and removed by another instance meanwhile
                remove_outbox(path)
                continue
            sent += await _drain_one(bus, path, log)
        finally:
            lock.release()
    return sent


async def _drain_one(bus: Bus, path: Path, log: Any | None) -> int:
    service = service_of(path)
    outbox = await asyncio.to_thread(Outbox, path)
    try:
        publisher = Publisher(bus, outbox, service, channel=service, own_gauge=False)
        sent = await publisher.drain() if outbox.depth else 0
        empty = outbox.depth == 0
    finally:
        outbox.close()
    if sent and log is not None:
        log.info("orphan_outbox_drained", outbox=str(path), sent=sent)
    if empty:
        remove_outbox(path)
    return sent


@contextlib.asynccontextmanager
async def orphan_drain(bus: Bus, data_dir: Path, service: str,
                       own: Path) -> AsyncIterator[asyncio.Task[None]]:
    """A background task: at start and every `ORPHAN_SCAN_S`, while the broker is there,
    drain the outboxes of `service` other than `own` that nobody holds."""
    log = get_logger(service=service, component="outbox")

    async def scan_forever() -> None:
        while True:
            if bus.connected:
                others = [path for path in service_outboxes(data_dir, service) if path != own]
                try:
                    await drain_unheld(bus, others, log)
                except Exception as exc:  # the next scan tries again
                    log.warning("orphan_outbox_drain_failed", error=str(exc)[:300])
                await asyncio.sleep(ORPHAN_SCAN_S)
            else:
                await bus.wait_connected(ORPHAN_SCAN_S)

    task = asyncio.create_task(scan_forever(), name="orphan-outboxes")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
