"""The timer scheduler: a task of every ticket-core process that fires due timers exactly once.

Each round is one write transaction: read up to `BATCH` pending timers due by the clock's
now, in due order; lock their tickets (`FOR UPDATE SKIP LOCKED` on PostgreSQL: a ticket
another process is working on waits for the next round; SQLite has one writer at a time,
`BEGIN IMMEDIATE`); claim each timer with `UPDATE timers SET state = 'fired' … WHERE id = :id
AND state = 'pending'` (a row another scheduler or an acknowledge settled first updates
nothing and is skipped); re-check its condition, apply its effect (timeline.py), set its final
state, and write its events to the event log, all committed together. So a timer fires once
across processes and restarts; those that fell due while no process ran fire at start, in due
order. Not RabbitMQ TTLs: a per-message TTL expires only at the head of its queue, and a broker
timer can be neither listed on its ticket nor cancelled by an acknowledge.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection

from intake.logging import get_logger
from intake.metrics import SLA_BREACHES

from .events import PlannedEvent
from .statements import TICKETS, TIMERS, CoreWriteStatements
from .store import TicketStore, append_events
from .timeline import TicketWork
from .timers import Timelines

BATCH = 500
POLL_S = 1.0
MAX_BACKOFF_S = 5.0
# A scheduler failing this long makes the service unready (its timers would fire late).
STALLED_AFTER_S = 30.0

TIMERS_SETTLED = Counter("intake_ticket_core_timers_total",
                         "Due timers the scheduler settled, by kind and final state",
                         ["service", "kind", "state"])

log = get_logger(component="timers")


def fire_due(connection: Connection, now: datetime, timelines: Timelines,
             limit: int = BATCH) -> int:
    """One round in the caller's write transaction: the number of timers fired.

    Set-based, so a round of 500 is a handful of statements: the due timers, their tickets
    (locked), one claiming UPDATE … RETURNING, then the final states, the tickets and the
    events in one executemany each.
    """
    due = connection.execute(
        select(TIMERS).where(TIMERS.c.state == "pending", TIMERS.c.due_at <= now)
        .order_by(TIMERS.c.due_at, TIMERS.c.id).limit(limit)).all()
    if not due:
        return 0
    events: list[PlannedEvent] = []
    works = {work.row.id: work for work in TicketWork.lock_many(
        connection, sorted({row.ticket_id for row in due}), timelines, events)}
    mine = [row.id for row in due if row.ticket_id in works]
    missing = {row.ticket_id for row in due} - works.keys()
    if missing:  # locked by another transaction (next round), or gone
        present = set(connection.execute(select(TICKETS.c.id).where(
            TICKETS.c.id.in_(sorted(missing)))).scalars())
        for row in due:
            if row.ticket_id in missing and row.ticket_id not in present:
                mine.append(row.id)  # claimed, then cancelled below
    claimed = set(connection.execute(
        update(TIMERS).where(TIMERS.c.id.in_(mine), TIMERS.c.state == "pending")
        .values(state="fired", fired_at=now).returning(TIMERS.c.id)).scalars()) if mine else set()
    settled: list[dict[str, Any]] = []
    outcomes: list[tuple[str, str]] = []
    breaches: list[tuple[str, str]] = []  # (desk, target)
    fired = 0
    for timer in due:
        if timer.id not in claimed:
            continue  # settled by another scheduler or an acknowledge first, or locked
        work = works.get(timer.ticket_id)
        if work is None:
            state, reason = "cancelled", "ticket not found"
        else:
            try:
                state, reason = work.fire(timer, now)
            except Exception as exc:  # a bad row must not stop the others
                log.warning("timer_failed", timer_id=timer.id, kind=timer.kind,
                            error=repr(exc))
                state, reason = "cancelled", f"failed: {exc!r}"[:256]
        if (state, reason) != ("fired", None):
            settled.append({"b_id": timer.id, "b_state": state, "b_reason": reason})
        outcomes.append((timer.kind, state))
        if timer.kind == "sla_breach" and state == "fired" and work is not None:
            breaches.append((work.desk or "", str(timer.ref)))
        fired += 1
    if settled:
        connection.execute(_SETTLE, settled)
    TicketWork.save_many(connection, list(works.values()), now)
    append_events(CoreWriteStatements(connection), events)
    # Counted inside the transaction: a rollback after this over-counts, which a counter of
    # settled timers tolerates better than missing the ones that committed.
    for kind, state in outcomes:
        TIMERS_SETTLED.labels("ticket-core", kind, state).inc()
    for desk, target in breaches:
        SLA_BREACHES.labels("ticket-core", desk, target).inc()
    return fired


_SETTLE = (update(TIMERS).where(TIMERS.c.id == bindparam("b_id"))
           .values(state=bindparam("b_state"), reason=bindparam("b_reason")))


class Scheduler:
    """Runs `fire_due` rounds until cancelled: at once while rounds are full, else at the
    next due time (by the clock), at most `poll_s` apart (another process may plan a timer
    due sooner). A round with nothing due is one read, no write transaction."""

    def __init__(self, store: TicketStore, *, poll_s: float = POLL_S,
                 batch: int = BATCH) -> None:
        self.store = store
        self.poll_s = poll_s
        self.batch = batch
        self.fired = 0
        self.failing_since: float | None = None

    async def run_once(self) -> int:
        now = self.store.clock.now()
        upcoming = await self.next_due()
        if upcoming is None or upcoming > now:
            return 0
        timelines = self.store.timelines
        fired: int = await self.store.write(
            lambda c: fire_due(c, now, timelines, self.batch))
        self.fired += fired
        return fired

    def problem(self) -> str | None:
        """A ready check's answer: why timers are not firing, or None."""
        if self.failing_since is not None and (
                time.monotonic() - self.failing_since) > STALLED_AFTER_S:
            return f"timers: failing for {time.monotonic() - self.failing_since:.0f} s"
        return None

    async def next_due(self) -> datetime | None:
        async with self.store.engine.connect() as conn:
            value: Any = (await conn.execute(select(func.min(TIMERS.c.due_at)).where(
                TIMERS.c.state == "pending"))).scalar()
        if value is None:
            return None
        # min() of a SQLite column comes back as its stored text, not through UtcDateTime.
        found = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return found if found.tzinfo is not None else found.replace(tzinfo=UTC)

    async def run(self) -> None:
        """Until cancelled; survives any error (logged once as it goes, once when back)."""
        delay = 0.2
        while True:
            try:
                fired = await self.run_once()
                wait = 0.0 if fired >= self.batch else await self._wait_s()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                    log.warning("timers_failed", error=repr(exc)[:500])
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            if self.failing_since is not None:
                log.info("timers_recovered",
                         seconds=round(time.monotonic() - self.failing_since, 1))
                self.failing_since = None
            delay = 0.2
            if wait > 0:
                await asyncio.sleep(wait)

    async def _wait_s(self) -> float:
        upcoming = await self.next_due()
        if upcoming is None:
            return self.poll_s
        seconds = (upcoming - self.store.clock.now()).total_seconds()
        return min(max(seconds, 0.01), self.poll_s)
