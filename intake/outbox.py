"""A connector's durable publish: broker confirm, or else a local fsynced SQLite outbox.

A source is answered with success only once `Publisher.publish` returns. While the outbox holds
anything, new messages queue behind it, so the bus sees them in the order they arrived. The
drain that empties it survives any error (a full disk included), backs off, and says when it
is stuck (`Publisher.problem`, which the connector's `/readyz` reports).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from prometheus_client import Counter

from .bus import Bus
from .errors import BrokerUnavailable, MessageTooLarge, Transient, Unroutable
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
        self.depth: int = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

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

    def _delete(self, seqs: list[int]) -> None:
        # One statement, so one transaction and one fsync for the lot; the values are ints.
        with self._lock:
            deleted: int = self._db.execute(
                f"DELETE FROM outbox WHERE seq IN ({','.join(str(int(s)) for s in seqs)})",
            ).rowcount
            self.depth -= deleted

    async def append(self, exchange: str, routing_key: str, body: bytes,
                     headers: dict[str, str] | None = None) -> None:
        await asyncio.to_thread(self._append, exchange, routing_key, body, headers or {})

    async def peek(self, limit: int = 200) -> list[OutboxEntry]:
        return await asyncio.to_thread(self._peek, limit)

    async def delete(self, seqs: list[int]) -> None:
        if seqs:
            await asyncio.to_thread(self._delete, seqs)

    def close(self) -> None:
        with self._lock:
            self._db.close()


# A backlog this small is drained (a few hundred ms) while new messages wait to go directly;
# a bigger one keeps taking new messages behind it, so requests are answered at once.
CATCH_UP_MAX = 2000
CATCH_UP_WAIT_S = 2.0
BATCH = 200
# A publish the broker returned (no queue bound for its key) is tried this many times from the
# outbox, with the drain's backoff in between (0.5 + 1 + 2 + 4 + 8 s: long enough for a
# consumer to declare its deleted queue again), then dead-lettered `unroutable`.
UNROUTABLE_ATTEMPTS = 6
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
# A drain with work, a connected broker and no progress for this long makes /readyz 503.
STALL_AFTER_S = 30.0


class Publisher:
    """What an edge awaits before it answers its source with success."""

    def __init__(self, bus: Bus, outbox: Outbox, service: str, channel: str = "", *,
                 stall_after_s: float = STALL_AFTER_S,
                 unroutable_attempts: int = UNROUTABLE_ATTEMPTS,
                 retry_first_s: float = RETRY_FIRST_S, own_gauge: bool = True) -> None:
        # own_gauge=False: another instance's outbox drained here (intake/outbox_files.py),
        # which must not overwrite this service's `intake_outbox_depth`.
        self.own_gauge = own_gauge
        self.bus = bus
        self.outbox = outbox
        self.service = service
        self.channel = channel
        self.stall_after_s = stall_after_s
        self.unroutable_attempts = unroutable_attempts
        self.retry_first_s = retry_first_s
        self.log = get_logger(service=service, component="outbox")
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._draining: asyncio.Task[None] | None = None
        self._empty: asyncio.Event | None = None  # set when the drain empties the outbox
        self._counters: dict[str, Counter] = {}
        # Confirmed by the broker but not yet deleted (the delete failed, say on a full disk):
        # deleted before anything else is published, so they are not published twice.
        self._unremoved: list[int] = []
        self._unroutable: dict[int, int] = {}  # seq -> attempts the broker returned
        self._failing_since: float | None = None  # first failed drain since the last progress
        self._last_error = ""
        if own_gauge:
            OUTBOX_DEPTH.labels(service).set(outbox.depth)

    def _published(self, channel: str) -> Counter:
        """The messages-out counter of a channel (looked up once, not per message)."""
        counter = self._counters.get(channel)
        if counter is None:
            counter = self._counters[channel] = MESSAGES_OUT.labels(self.service, channel)
        return counter

    # -- the edge ---------------------------------------------------------------------------

    async def publish(self, message: Message, exchange: str = "inbound", *,
                      timeout: float | None = None) -> None:
        """Return once the message is confirmed by the broker or fsynced in the outbox.

        `timeout` bounds the whole call (WeChat answers its callback within 5 s): the broker
        attempt gets what is left after a reserve for the outbox append (a quarter, at most
        one second), and the outbox takes the message if the broker has not confirmed by then.
        Raises `MessageTooLarge` (before anything is written) or `Transient`.
        """
        body = message.model_dump_json().encode()
        limit = self.bus.settings.max_message_bytes
        if len(body) > limit:
            raise MessageTooLarge(
                f"the message is {len(body)} bytes; this gateway takes at most {limit}"
                " (INTAKE_MAX_MESSAGE_BYTES)", size=len(body), limit=limit)
        loop = asyncio.get_running_loop()
        broker_deadline = (None if timeout is None
                           else loop.time() + timeout - min(1.0, timeout / 4))

        def left(cap: float) -> float:
            return cap if broker_deadline is None else min(cap, broker_deadline - loop.time())

        routing_key = message.routing_key
        if (0 < self.outbox.depth <= CATCH_UP_MAX and self.bus.connected
                and self._failing_since is None):
            # A short backlog (the broker was away for a moment): wait for the drain to empty
            # it, then publish directly. Queueing every new message behind it would cost each
            # an fsynced append, a read and a delete, which under steady load can keep the
            # backlog, and the doubled cost, from ever ending.
            await self._caught_up(left(CATCH_UP_WAIT_S))
        budget = left(self.bus.settings.publish_timeout_s)
        if self.outbox.depth == 0 and self.bus.connected and budget > 0:
            try:
                await self.bus.publish(exchange, routing_key, body,
                                       message_id=str(message.id), timeout=budget)
                self._published(message.channel).inc()
                return
            except BrokerUnavailable as exc:  # Unroutable included: the drain retries it
                self.log.warning("publish_deferred", error=str(exc), reason=exc.reason,
                                 idempotency_key=message.idempotency_key)
        try:
            await self.outbox.append(exchange, routing_key, body, {"message_id": str(message.id)})
        except (OSError, sqlite3.Error) as exc:
            raise Transient(f"neither the broker nor the outbox took the message: {exc}",
                            reason="outbox_unwritable") from exc
        OUTBOX_DEPTH.labels(self.service).set(self.outbox.depth)
        self._wake.set()

    async def _caught_up(self, timeout: float) -> None:
        if timeout <= 0:
            return
        self._wake.set()
        empty = self._empty
        if empty is None or empty.is_set():
            empty = self._empty = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(empty.wait(), timeout)

    def _note_depth(self) -> None:
        if self.own_gauge:
            OUTBOX_DEPTH.labels(self.service).set(self.outbox.depth)
        if self.outbox.depth == 0 and self._empty is not None:
            self._empty.set()

    # -- health -----------------------------------------------------------------------------

    def problem(self) -> str | None:
        """Why the outbox is not draining although it could, or None.

        A broker that is away is not a problem here (the outbox exists for that, and the edge
        still accepts durably); a drain that fails with the broker connected is, once it has
        made no progress for `stall_after_s`.
        """
        if self._draining is not None and self._draining.done():
            return "the outbox drain has stopped"
        since = self._failing_since
        if since is None or not self.outbox.depth or not self.bus.connected:
            return None
        stalled = time.monotonic() - since
        if stalled < self.stall_after_s:
            return None
        return (f"outbox drain stalled for {stalled:.0f} s with {self.outbox.depth} waiting:"
                f" {self._last_error}")

    def wake(self) -> None:
        """Try the drain now (the bus calls it when it is connected again)."""
        self._wake.set()

    # -- the drain --------------------------------------------------------------------------

    def start(self) -> None:
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain_forever(), name="outbox-drain")
            if self.outbox.depth:
                self._wake.set()

    async def _drain_forever(self) -> None:
        failures = 0
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            self._wake.clear()
            if self._stop.is_set() or not (self.outbox.depth or self._unremoved):
                continue
            if not self.bus.connected:
                # The outbox is doing its job, which is no failure of the drain; the bus wakes
                # it when it is back.
                self._failing_since = None
                continue
            try:
                await self.drain()
            except Exception as exc:  # whatever it is, the drain goes on after a pause
                failures += 1
                self._note_failure(exc)
                delay = min(self.retry_first_s * 2 ** (failures - 1), RETRY_MAX_S)
                if isinstance(exc, BrokerUnavailable) and not isinstance(exc, Unroutable):
                    # Connection trouble: soon again (a reconnect also wakes the drain).
                    delay = min(delay, 1.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay * (0.8 + 0.4 * random.random()))
                self._wake.set()
            else:
                failures = 0

    def _note_failure(self, exc: BaseException) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"[:300]
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            # Logged once as it starts failing and once when it moves again (in `_progressed`).
            self.log.warning("outbox_drain_failed", error=self._last_error,
                             depth=self.outbox.depth)

    def _progressed(self) -> None:
        if self._failing_since is not None:
            self.log.info("outbox_drain_recovered", depth=self.outbox.depth,
                          seconds=round(time.monotonic() - self._failing_since, 1))
            self._failing_since = None
            self._last_error = ""

    async def drain(self) -> int:
        """Publish the outbox in order; each entry is removed only once confirmed.

        Raises when a batch could not be finished; what was confirmed is removed first (or
        remembered, if even that fails, and removed before anything is published again).
        """
        sent = 0
        if self._unremoved:
            await self._remove(self._unremoved)
        while self.outbox.depth and self.bus.connected:
            entries = await self.outbox.peek(BATCH)
            if not entries:
                break
            # Published in order on one channel; confirms may come back in any order.
            results = await asyncio.gather(
                *(self.bus.publish(e.exchange, e.routing_key, e.body,
                                   message_id=e.headers.get("message_id"))
                  for e in entries), return_exceptions=True)
            done: list[int] = []
            failure: BaseException | None = None
            for entry, result in zip(entries, results, strict=True):
                if result is None:
                    done.append(entry.seq)
                elif isinstance(result, Unroutable):
                    if await self._dead_letter_if_spent(entry, result):
                        done.append(entry.seq)
                    else:
                        failure = failure or result
                else:
                    failure = failure or result
            published = sum(1 for result in results if result is None)
            await self._remove(done)
            sent += published
            self._published(self.channel).inc(published)
            if failure is not None:
                if isinstance(failure, Exception):
                    raise failure
                raise BrokerUnavailable(repr(failure))
        if sent:
            self.log.info("outbox_drained", sent=sent, depth=self.outbox.depth)
        return sent

    async def _dead_letter_if_spent(self, entry: OutboxEntry, exc: Unroutable) -> bool:
        """Count a return by the broker; once the attempts are spent, dead-letter the entry.

        Never dropped: if the dead letter cannot be published either, the entry stays.
        """
        attempts = self._unroutable.get(entry.seq, 0) + 1
        self._unroutable[entry.seq] = attempts
        if attempts < self.unroutable_attempts:
            return False
        try:
            await self.bus.dead_letter(
                entry.body, "unroutable", f"{exc} ({attempts} attempts)",
                queue=f"outbox:{self.service}", exchange=self.bus.names(entry.exchange),
                routing_key=entry.routing_key, headers=dict(entry.headers))
        except Exception as dead_exc:  # kept, and tried again
            self.log.warning("dead_letter_failed", error=str(dead_exc)[:300])
            return False
        return True

    async def _remove(self, seqs: list[int]) -> None:
        if not seqs:
            return
        try:
            await self.outbox.delete(seqs)
        except BaseException:
            self._unremoved = sorted(set(self._unremoved) | set(seqs))
            raise
        removed = set(seqs)
        self._unremoved = [seq for seq in self._unremoved if seq not in removed]
        for seq in seqs:
            self._unroutable.pop(seq, None)
        self._note_depth()
        self._progressed()

    async def stop(self, drain_within_s: float = 0.0) -> None:
        """Stop the drain task; then, with `drain_within_s`, drain what is left while the
        broker answers (at SIGTERM, after the edge stopped accepting) within that time."""
        self._stop.set()
        self._wake.set()
        if self._draining is not None:
            with contextlib.suppress(Exception):
                await self._draining
        if drain_within_s > 0 and self.outbox.depth and self.bus.connected:
            try:
                await asyncio.wait_for(self.drain(), drain_within_s)
            except Exception as exc:  # kept in the outbox; the next start drains it
                self.log.warning("outbox_left_at_stop", depth=self.outbox.depth,
                                 error=f"{type(exc).__name__}: {exc}"[:300])
