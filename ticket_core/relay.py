"""The relay: publishes what the ticket core committed (outbox rows, then the event log).

Outbound messages go to `intake.outbound` with key `<channel>.<account>`, `mandatory`: one the
broker returns (no connector's queue takes it) is recorded `failed`, reason `no_connector`.
Event rows go to `intake.events` with key `<type>.<desk>` in id order, confirmed, without
`mandatory` (nobody may listen yet); the last id published is written to the `events_relayed`
counter row at most once a second and when the relay stops. Both are at least once: a crash
after the publish and before the bookkeeping publishes again at start (a connector's
sent-ledger and event consumers dedupe by id).

One relay at a time: on PostgreSQL the relay holds a session advisory lock while it runs (a
second replica waits for it); a SQLite file has one ticket core process anyway. The relay
wakes on every commit of this process (`TicketStore.changes`) and polls as a fallback; it
survives any error, backs off, and reports a drain that is not making progress (`problem`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from sqlalchemy import select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from intake.bus import Bus
from intake.errors import Unroutable
from intake.logging import get_logger
from intake.message import utcnow

from . import db
from .delivery import set_status
from .events import envelope, routing_key
from .statements import COUNTERS, MESSAGES, OUTBOX, TICKETS
from .store import Changes, TicketStore

RELAY_LOCK_KEY = 7316540873
POLL_S = 1.0
# Once woken, the relay waits this long for more commits: under load one cycle (its reads, its
# publishes, its fsynced bookkeeping) then serves many batches instead of one each. Events
# reach intake.events this much later; the SSE stream reads the log itself and does not wait.
GATHER_S = 0.02
BATCH = 200
MAX_BACKOFF_S = 5.0
# The relayed position is written at most this often (and when the relay stops): a crash
# publishes again up to this much, which consumers tell apart by the envelope's id. Written
# per cycle, it was a fsynced transaction per 20 ms competing with the ticket writes.
POSITION_EVERY_S = 1.0
# A relay that has had work and no success for this long makes the service unready.
STALLED_AFTER_S = 30.0
# How often a relay waiting for another's lock tries again.
LOCK_RETRY_S = 2.0

log = get_logger(component="relay")


class Relay:
    def __init__(self, store: TicketStore, bus: Bus, *, poll_s: float = POLL_S,
                 events: bool = True) -> None:
        """`events=False` relays the outbox only (INTAKE_TICKET_CORE_RELAY_EVENTS)."""
        self.store = store
        self.bus = bus
        self.poll_s = poll_s
        self.events = events
        self.failing_since: float | None = None
        self.published_outbound = 0
        self.published_events = 0
        self.gather_s = GATHER_S
        self._relayed: int | None = None  # the last event id published
        self._recorded: int | None = None  # the last event id written to its counter row
        self._recorded_at = 0.0
        self._stopping = False
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="ticket-core-relay")

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch under way (publish and bookkeeping), then end; cancel after
        `timeout` (what it published and did not record is published again at start)."""
        self._stopping = True
        self._stopped.set()
        self.store.changes.notify()
        task, self._task = self._task, None
        if task is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def problem(self) -> str | None:
        """A ready check's answer: why the relay is not making progress, or None."""
        if self.failing_since is not None and (
                time.monotonic() - self.failing_since) > STALLED_AFTER_S:
            return f"relay: no progress for {time.monotonic() - self.failing_since:.0f} s"
        return None

    async def run(self) -> None:
        """Relay until stopped (or cancelled)."""
        async with self._the_only_relay() as holding:
            if not holding:
                return
            delay = 0.2
            while not self._stopping:
                token = self.store.changes.token()
                try:
                    busy = await self.relay_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the relay survives anything; see `problem`
                    self.store.outbox_pending = True  # what failed is looked for again
                    self._relayed = self._recorded = None
                    if self.failing_since is None:
                        self.failing_since = time.monotonic()
                        log.warning("relay_failed", error=repr(exc)[:500])
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, MAX_BACKOFF_S)
                    continue
                if self.failing_since is not None:
                    log.info("relay_recovered",
                             seconds=round(time.monotonic() - self.failing_since, 1))
                    self.failing_since = None
                delay = 0.2
                if not busy and not self._stopping:
                    if not await Changes.wait(token, self.poll_s):
                        self.store.outbox_pending = True  # the poll: look at everything
                if not self._stopping:
                    await asyncio.sleep(self.gather_s)
            with contextlib.suppress(Exception):  # unrecorded: published again at start
                await self._record_position(force=True)

    async def relay_once(self) -> bool:
        """Publish what is pending (a batch of each); True when there was any."""
        outbound = await self.relay_outbox()
        events = await self.relay_events() if self.events else 0
        return outbound + events > 0

    # ---- outbound messages ---------------------------------------------------------------

    async def relay_outbox(self) -> int:
        if not self.store.outbox_pending:  # no reply since the last look: skip the query
            return 0
        self.store.outbox_pending = False  # cleared first: a reply committed meanwhile sets it
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(
                select(OUTBOX.c.id, OUTBOX.c.message_id, OUTBOX.c.routing_key, OUTBOX.c.body)
                .where(OUTBOX.c.published_at.is_(None)).order_by(OUTBOX.c.id).limit(BATCH)
            )).all()
        if not rows:
            return 0
        if len(rows) == BATCH:
            self.store.outbox_pending = True  # more behind this batch
        published: list[int] = []
        returned: list[Any] = []
        try:
            for row in rows:
                try:
                    await self.bus.publish("outbound", row.routing_key, row.body.encode(),
                                           message_id=row.message_id, mandatory=True)
                except Unroutable:
                    returned.append(row)
                else:
                    published.append(row.id)
        finally:
            if published or returned:
                await self.store.write(lambda c: _settle_outbox(c, published, returned))
                self.published_outbound += len(published)
                for row in returned:
                    log.warning("outbound_unroutable", message_id=row.message_id,
                                routing_key=row.routing_key)
        return len(rows)

    # ---- events --------------------------------------------------------------------------

    async def relay_events(self) -> int:
        if self._relayed is None:  # one relay at a time: after the first read, ours is current
            async with self.store.engine.connect() as conn:
                relayed = (await conn.execute(select(COUNTERS.c.value).where(
                    COUNTERS.c.name == db.EVENTS_RELAYED))).scalar()
            self._relayed = self._recorded = int(relayed or 0)
        # What this process has just committed, when it continues the position; else the log.
        recent = self.store.recent_events.after(self._relayed, BATCH)
        rows: Sequence[Any] = (recent if recent is not None
                               else await self.store.events_after(self._relayed, BATCH))
        if not rows:
            await self._record_position()
            return 0
        # Queued in id order on one AMQP channel, confirmed together (one deadline, no task
        # per event); consumers tell repeats apart by the envelope's id.
        await self.bus.publish_many(
            "events", [(routing_key(row), orjson.dumps(envelope(row)), None) for row in rows],
            mandatory=False)
        self._relayed = recent[-1]["id"] if recent else rows[-1].id
        self.published_events += len(rows)
        await self._record_position()
        return len(rows)

    async def _record_position(self, *, force: bool = False) -> None:
        """Write the last published id to its counter row, at most every POSITION_EVERY_S."""
        last = self._relayed
        if last is None or last == self._recorded or (
                not force and time.monotonic() - self._recorded_at < POSITION_EVERY_S):
            return
        await self.store.write(lambda c: _set_relayed(c, last))
        self._recorded, self._recorded_at = last, time.monotonic()

    @contextlib.asynccontextmanager
    async def _the_only_relay(self) -> AsyncIterator[bool]:
        """Yields True once this is the only relay (False: stopped while waiting)."""
        if self.store.dialect != "postgresql":
            yield True
            return
        async with self.store.engine.connect() as conn:
            holding = await self._wait_for_lock(conn)
            try:
                yield holding
            finally:
                if holding:
                    with contextlib.suppress(Exception):
                        await conn.execute(text(f"SELECT pg_advisory_unlock({RELAY_LOCK_KEY})"))
                        await conn.commit()

    async def _wait_for_lock(self, conn: AsyncConnection) -> bool:
        waited = False
        while not self._stopping:
            got = (await conn.execute(text(f"SELECT pg_try_advisory_lock({RELAY_LOCK_KEY})"))
                   ).scalar()
            await conn.commit()  # no transaction left open while holding or waiting
            if got:
                return True
            if not waited:
                log.info("relay_waiting", reason="another relay holds the lock")
                waited = True
            # Not woken by commits: a standby replica would query the lock at every batch.
            await Changes.wait(self._stopped, LOCK_RETRY_S)
        return False


def _settle_outbox(connection: Connection, published: Sequence[int],
                   returned: Sequence[Any]) -> None:
    now = utcnow()
    done = [*published, *(row.id for row in returned)]
    connection.execute(update(OUTBOX).where(OUTBOX.c.id.in_(done)).values(published_at=now))
    for row in returned:
        message = connection.execute(
            select(MESSAGES.c.id, MESSAGES.c.ticket_id, MESSAGES.c.customer_id,
                   MESSAGES.c.channel, MESSAGES.c.delivery_status, MESSAGES.c.delivery_attempt,
                   TICKETS.c.number, TICKETS.c.status, TICKETS.c.desk)
            .select_from(MESSAGES.outerjoin(TICKETS, TICKETS.c.id == MESSAGES.c.ticket_id))
            .where(MESSAGES.c.id == row.message_id)
            .with_for_update(of=MESSAGES)).first()
        if message is not None and message.delivery_status in (None, "pending"):
            set_status(connection, message, "failed", "no_connector",
                       message.delivery_attempt or 1, now)


def _set_relayed(connection: Connection, last: int) -> None:
    updated = connection.execute(
        update(COUNTERS).where(COUNTERS.c.name == db.EVENTS_RELAYED,
                               COUNTERS.c.value < last).values(value=last))
    if updated.rowcount == 0 and connection.execute(select(COUNTERS.c.name).where(
            COUNTERS.c.name == db.EVENTS_RELAYED)).first() is None:
        connection.execute(COUNTERS.insert().values(name=db.EVENTS_RELAYED, value=last))

