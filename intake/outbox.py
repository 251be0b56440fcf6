"""A connector's durable publish: broker confirm, or else a local fsynced SQLite outbox.

A source is answered with success only once `Publisher.publish` returns. While the outbox holds
anything, new messages queue behind it, so the bus sees them in the order they arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

import orjson
from prometheus_client import Counter

from .bus import Bus
from .errors import BrokerUnavailable, Transient
from .logging import get_logger
from .message import Message
from .metrics import MESSAGES_OUT, OUTBOX_DEPTH


@dataclass(frozen=True)
class OutboxEntry:
    seq: int
    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, str]


class Outbox:
    """An append-only SQLite queue; `synchronous=FULL` makes each append fsynced before return."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " exchange TEXT NOT NULL, routing_key TEXT NOT NULL, body BLOB NOT NULL,"
            " headers BLOB NOT NULL)")
        self.depth = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def _append(self, exchange: str, routing_key: str, body: bytes,
                headers: dict[str, str]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO outbox (exchange, routing_key, body, headers) VALUES (?, ?, ?, ?)",
                (exchange, routing_key, body, orjson.dumps(headers)))
            self.depth += 1

    def _peek(self, limit: int) -> list[OutboxEntry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, exchange, routing_key, body, headers FROM outbox"
                " ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [OutboxEntry(seq, ex, key, bytes(body), orjson.loads(headers))
                for seq, ex, key, body, headers in rows]

    def _delete_through(self, seq: int) -> None:
        with self._lock:
            deleted = self._db.execute("DELETE FROM outbox WHERE seq <= ?", (seq,)).rowcount
            self.depth -= deleted

    async def append(self, exchange: str, routing_key: str, body: bytes,
                     headers: dict[str, str] | None = None) -> None:
        await asyncio.to_thread(self._append, exchange, routing_key, body, headers or {})

    async def peek(self, limit: int = 200) -> list[OutboxEntry]:
        return await asyncio.to_thread(self._peek, limit)

    async def delete_through(self, seq: int) -> None:
        await asyncio.to_thread(self._delete_through, seq)

    def close(self) -> None:
        with self._lock:
            self._db.close()


# A backlog this small is drained (a few hundred ms) while new messages wait to go directly;
# a bigger one keeps taking new messages behind it, so requests are answered at once.
CATCH_UP_MAX = 2000
CATCH_UP_WAIT_S = 2.0


class Publisher:
    """What an edge awaits before it answers its source with success."""

    def __init__(self, bus: Bus, outbox: Outbox, service: str, channel: str = "") -> None:
        self.bus = bus
        self.outbox = outbox
        self.service = service
        self.channel = channel
        self.log = get_logger(service=service, component="outbox")
        self._wake = asyncio.Event()
        self._draining: asyncio.Task[None] | None = None
        self._stopping = False
        self._empty: asyncio.Event | None = None  # set when the drain empties the outbox
        self._counters: dict[str, Counter] = {}
        OUTBOX_DEPTH.labels(service).set(outbox.depth)

    def _published(self, channel: str) -> Counter:
        """The messages-out counter of a channel (looked up once, not per message)."""
        counter = self._counters.get(channel)
        if counter is None:
            counter = self._counters[channel] = MESSAGES_OUT.labels(self.service, channel)
        return counter

    async def publish(self, message: Message, exchange: str = "inbound") -> None:
        body = message.model_dump_json().encode()
        routing_key = message.routing_key
        if 0 < self.outbox.depth <= CATCH_UP_MAX and self.bus.connected:
            # A short backlog (the broker was away for a moment): wait for the drain to empty
            # it, then publish directly. Queueing every new message behind it would cost each
            # an fsynced append, a read and a delete, which under steady load can keep the
            # backlog, and the doubled cost, from ever ending.
            await self._caught_up(CATCH_UP_WAIT_S)
        if self.outbox.depth == 0 and self.bus.connected:
            try:
                await self.bus.publish(exchange, routing_key, body,
                                       message_id=str(message.id))
                self._published(message.channel).inc()
                return
            except BrokerUnavailable as exc:
                self.log.warning("publish_deferred", error=str(exc),
                                 idempotency_key=message.idempotency_key)
        try:
            await self.outbox.append(exchange, routing_key, body, {"message_id": str(message.id)})
        except (OSError, sqlite3.Error) as exc:
            raise Transient(f"neither the broker nor the outbox took the message: {exc}",
                            reason="outbox_unwritable") from exc
        OUTBOX_DEPTH.labels(self.service).set(self.outbox.depth)
        self._wake.set()

    async def _caught_up(self, timeout: float) -> None:
        self._wake.set()
        empty = self._empty
        if empty is None or empty.is_set():
            empty = self._empty = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(empty.wait(), timeout)

    def _note_depth(self) -> None:
        OUTBOX_DEPTH.labels(self.service).set(self.outbox.depth)
        if self.outbox.depth == 0 and self._empty is not None:
            self._empty.set()

    def start(self) -> None:
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain_forever(), name="outbox-drain")
            if self.outbox.depth:
                self._wake.set()

    async def _drain_forever(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            self._wake.clear()
            if self.outbox.depth and self.bus.connected:
                try:
                    await self.drain()
                except BrokerUnavailable as exc:
                    self.log.warning("outbox_drain_paused", error=str(exc),
                                     depth=self.outbox.depth)

    async def drain(self) -> int:
        """Publish the outbox in order; each batch is removed only once confirmed."""
        sent = 0
        while self.outbox.depth and self.bus.connected:
            entries = await self.outbox.peek(200)
            if not entries:
                break
            # Published in order on one channel; confirms may come back in any order, so the
            # batch is deleted only when all of it is confirmed.
            results = await asyncio.gather(
                *(self.bus.publish(e.exchange, e.routing_key, e.body,
                                   message_id=e.headers.get("message_id"))
                  for e in entries), return_exceptions=True)
            confirmed = 0
            for result in results:
                if isinstance(result, BaseException):
                    break
                confirmed += 1
            if confirmed:
                await self.outbox.delete_through(entries[confirmed - 1].seq)
                sent += confirmed
                self._published(self.channel).inc(confirmed)
                self._note_depth()
            if confirmed < len(entries):
                failure = results[confirmed]
                raise failure if isinstance(failure, BrokerUnavailable) else BrokerUnavailable(
                    str(failure))
        if sent:
            self.log.info("outbox_drained", sent=sent, depth=self.outbox.depth)
        return sent

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._draining is not None:
            with contextlib.suppress(Exception):
                await self._draining
