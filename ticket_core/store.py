"""The ticket store's write orchestration: transactions, retries, the plan's writes, the events.

A batch of routed messages is persisted in one transaction, in three steps: load everything
the batch could need in a few set-based queries, plan in memory message by message
(planner.py), then write with one bulk statement per table (statements.py; writes.py on a
SQLite file), the event log's rows last. A single message is a batch of one, about ten
statements. Writers that race on PostgreSQL (same idempotency key, same new identity) meet a
unique constraint; the loser rolls back and plans again against the winner's rows, which turns
a repeated key into `duplicate=True`. A conflict that five fresh plans cannot get past is not
a race but this batch's own fault: it fails the batch (failures.Unpersistable), it does not
hold the consumer.

Other writes (replies, delivery results, the relay's bookkeeping) run a function on a
SQLAlchemy connection in one write transaction (`TicketStore.write`). After every commit the
store signals `changes`, which wakes the relay and the event streams.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from intake.errors import StorageUnavailable
from intake.logging import get_logger
from intake.message import Message, utcnow

from . import db
from .clock import Clock, SystemClock
from .events import PlannedEvent, RecentEvents
from .failures import RETRYABLE_SQLSTATES, Unpersistable, sqlstate, storage_unavailable
from .history import Author, history_rows, writing_for
from .planner import PersistResult, Plan, finish_results, normalize_identity, plan_batch
from .queries import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    CursorInvalid,
    StoredBlob,
    TicketFilter,
    TicketPageResult,
    TicketReader,
    decode_cursor,
    encode_cursor,
)
from .statements import (
    ATTACHMENTS,
    COUNTERS,
    CUSTOMERS,
    EVENTS,
    HISTORY,
    IDENTITIES,
    MESSAGES,
    TICKET_TAGS,
    TICKETS,
    TIMERS,
    CoreWriteStatements,
    WriteStatements,
)
from .timers import AUTOMATIC_KINDS, Timelines
from .writes import SqliteWriter

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "WRITE_ATTEMPTS", "Changes", "CursorInvalid",
           "PersistResult", "StoredBlob", "TicketFilter", "TicketPageResult", "TicketStore",
           "append_events", "decode_cursor", "encode_cursor", "normalize_identity"]

WRITE_ATTEMPTS = 5

T = TypeVar("T")

log = get_logger(component="ticket_store")


class PlanStale(Exception):
    """A ticket the batch appends to, or a customer it writes for, was merged after the plan
    read them (another transaction committed in between, PostgreSQL): plan again; the message
    then follows the merge as threads.py says."""


class Changes:
    """A signal that the database changed (a commit of this process): take a `token()` before
    reading, then `wait(token, timeout)` returns at once if something committed since."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def token(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    @staticmethod
    async def wait(token: asyncio.Event, timeout: float) -> bool:
        """True when something committed, False when `timeout` passed first."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await token.wait()
        return token.is_set()


def append_events(statements: WriteStatements,
                  events: Sequence[PlannedEvent]) -> list[dict[str, Any]]:
    """Insert `events` with ids from the counter row, and their audit history rows (one
    more multi-row insert, history.py); call it last in the transaction: on PostgreSQL the
    counter row stays locked until commit, which is what makes ids visible in order.
    Returns the event rows inserted."""
    if not events:
        return []
    last = statements.bump_counter(db.EVENT_COUNTER, len(events))
    if last is None:  # a schema made without the migration's seed row
        last = len(events)
        statements.insert(COUNTERS, [{"name": db.EVENT_COUNTER, "value": last}])
    first = last - len(events) + 1
    rows = [event.row(first + i) for i, event in enumerate(events)]
    statements.insert(EVENTS, rows)
    history = history_rows(events, rows)
    if history:
        statements.insert(HISTORY, history)
    return rows


class TicketStore(TicketReader):
    """The only writer of the ticket core database, and its reader for the agent API."""

    def __init__(self, engine: AsyncEngine, *, sqlite_fast_path: bool = True,
                 clock: Clock | None = None, timelines: Timelines | None = None) -> None:
        """`sqlite_fast_path=False` writes a SQLite file through SQLAlchemy Core statements,
        as PostgreSQL is written, instead of raw sqlite3 ones (see writes.py): same rows.
        `clock`: domain time (timers, acknowledgements); `timelines`: the rules' escalation
        timelines (timers.py)."""
        super().__init__(engine)
        self.clock: Clock = clock or SystemClock()
        self.timelines = timelines if timelines is not None else Timelines()
        self._dialect = engine.dialect.name
        self._write_engine = engine.execution_options(**{db.WRITE: True})
        # A SQLite file is written from one thread of our own, a transaction per hop (see
        # SqliteWriter); PostgreSQL (and an in-memory SQLite) through the async engine.
        self._writer = (SqliteWriter(engine.url, fast_path=sqlite_fast_path)
                        if db.sqlite_file(engine.url) else None)
        # SQLite has one writer at a time anyway; queueing here is cheaper than busy-waiting.
        self._write_lock: asyncio.Lock | contextlib.nullcontext[None] = (
            asyncio.Lock() if self._dialect == "sqlite" else contextlib.nullcontext())
        self.changes = Changes()
        # The event rows this process committed last, for the relay (see RecentEvents).
        self.recent_events = RecentEvents()
        # Outbox rows this process committed that the relay has not looked for yet (a reply);
        # the relay also looks at start and at every poll (other replicas, rows after a crash).
        self.outbox_pending = True

    @property
    def dialect(self) -> str:
        return self._dialect

    @property
    def write_engine(self) -> Engine:
        """The synchronous engine that write transactions run on (for event listeners).

        On a SQLite file's fast path only its pool events ("connect") fire: the statements run
        on the raw sqlite3 connection, not through SQLAlchemy.
        """
        return self._writer.engine if self._writer is not None else self.engine.sync_engine

    async def close(self) -> None:
        """Stop the SQLite writer thread and close its connection; the engine is the caller's."""
        if self._writer is not None:
            await self._writer.close()

    # ---- routed messages -----------------------------------------------------------------

    async def persist(self, message: Message) -> PersistResult:
        """Store one routed message; a repeated idempotency key is a no-op (`duplicate=True`)."""
        return (await self.persist_many([message]))[0]

    async def persist_many(self, messages: Sequence[Message]) -> list[PersistResult]:
        """Store a batch in ONE transaction; results in the order of `messages`."""
        if not messages:
            return []
        last: BaseException | None = None
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                async with self._write_lock:
                    results, events = await self._in_transaction(messages)
                self.recent_events.add(events)  # committed: the relay may take them
                self.changes.notify()
                return results
            except sa_exc.IntegrityError as exc:
                # Another writer committed the same idempotency key or a new identity first.
                last = exc
                log.info("persist_conflicted", attempt=attempt, error=str(exc.orig))
            except PlanStale as exc:
                last = exc
                log.info("persist_replanned", attempt=attempt, tickets=str(exc))
            except sa_exc.DBAPIError as exc:
                if sqlstate(exc) in RETRYABLE_SQLSTATES:
                    last = exc
                    continue
                if storage_unavailable(exc):
                    raise StorageUnavailable(f"database unavailable: {exc.orig}") from exc
                raise
            except (OSError, TimeoutError, sa_exc.SQLAlchemyError) as exc:
                if storage_unavailable(exc):
                    raise StorageUnavailable(f"database unavailable: {exc}") from exc
                raise
        # The same conflict after five fresh plans is no race: this batch cannot be written.
        raise Unpersistable(f"the same conflict {WRITE_ATTEMPTS} times: {last}") from last

    async def _in_transaction(self, messages: Sequence[Message],
                              ) -> tuple[list[PersistResult], list[dict[str, Any]]]:
        """The batch in one write transaction, committed if planning and writing succeed;
        returns the results and the event rows written."""
        author = Author.capture()

        def persist(statements: WriteStatements,
                    ) -> tuple[list[PersistResult], list[dict[str, Any]]]:
            with writing_for(author):
                return self._persist_batch(statements, messages)

        if self._writer is not None:
            return await self._writer.run(persist)
        async with self._write_engine.begin() as connection:
            return await connection.run_sync(
                lambda sync: persist(CoreWriteStatements(sync)))

    def _persist_batch(self, statements: WriteStatements, messages: Sequence[Message],
                       ) -> tuple[list[PersistResult], list[dict[str, Any]]]:
        now = utcnow()
        plan = plan_batch(statements, messages, now, self.timelines)
        events = self._write(statements, plan, now)
        return finish_results(plan, messages), events

    def _write(self, statements: WriteStatements, plan: Plan,
               now: Any) -> list[dict[str, Any]]:
        """Parents before children; the counters last, so their row locks are held briefly."""
        # First, so that a merge of a ticket appended to or of the sender's customer waits for
        # this batch and then moves what it wrote, or committed since the plan read them and
        # the batch plans again (PostgreSQL; SQLite writes one at a time).
        new_customers = {row["id"] for row in plan.customers}
        stored_customers = {row["customer_id"] for row in plan.messages} - new_customers
        if plan.touched or stored_customers:
            stale = statements.lock_planned(sorted(plan.touched), sorted(stored_customers))
            if stale:
                raise PlanStale(", ".join(stale))
        if plan.customers:
            statements.insert(CUSTOMERS, plan.customers)
        # Sorted, so two writers adding the same identities lock them in the same order.
        if plan.identities_new:
            # Plain insert: if a concurrent writer created one of them, retry and find it.
            statements.insert(IDENTITIES, _sorted(plan.identities_new))
        if plan.identities_added:
            statements.add_identities(_sorted(plan.identities_added))
        if plan.verify:
            statements.verify_identities(sorted(plan.verify))
        if plan.tickets:
            numbers = self._allocate_numbers(statements, len(plan.tickets))
            for row, ref, number in zip(plan.tickets, plan.new_ticket_refs, numbers,
                                        strict=True):
                row["number"] = ref.number = number
                row["status"] = ref.status
            statements.insert(TICKETS, plan.tickets)
            if plan.ticket_tags:
                statements.insert(TICKET_TAGS, plan.ticket_tags)
        if plan.timers:
            statements.insert(TIMERS, plan.timers)
        if plan.messages:
            statements.insert(MESSAGES, plan.messages)
        if plan.attachments:
            statements.insert(ATTACHMENTS, plan.attachments)
        if plan.touched:
            statements.touch_tickets(
                [(ref.id, ref.status, now, ref.reopened)
                 for ref in sorted(plan.touched.values(), key=lambda r: r.id)])
        if plan.woken:
            statements.cancel_timers(sorted(plan.woken), AUTOMATIC_KINDS, "customer replied")
        if plan.satisfaction:
            statements.set_satisfaction(sorted(plan.satisfaction.items()))
        # The search documents of every ticket whose text changed, in this transaction.
        indexed = {row["id"] for row in plan.tickets} | {
            row["ticket_id"] for row in plan.messages if row["ticket_id"] is not None}
        owners = {row["customer_id"] for row in plan.identities_added}
        if indexed or owners:
            statements.index_tickets(sorted(indexed), sorted(owners))
        return append_events(statements, plan.events)

    def _allocate_numbers(self, statements: WriteStatements, count: int) -> list[int]:
        last = statements.bump_counter(db.TICKET_COUNTER, count)
        if last is None:  # a schema made without the migration's seed row
            last = db.FIRST_TICKET_NUMBER - 1 + count
            statements.insert(COUNTERS, [{"name": db.TICKET_COUNTER, "value": last}])
        return list(range(last - count + 1, last + 1))

    # ---- other writes --------------------------------------------------------------------

    async def write(self, work: Callable[[Connection], T]) -> T:
        """`work(connection)` in one write transaction (SQLAlchemy Core), committed if it
        returns; then `changes` is signalled. Database outages raise StorageUnavailable.
        The caller's principal and trace id go with it (the history's actor: history.py),
        also to the SQLite writer's thread, which does not see the caller's context."""
        author = Author.capture()

        def carried(connection: Connection) -> T:
            with writing_for(author):
                return work(connection)

        try:
            async with self._write_lock:
                if self._writer is not None:
                    result = await self._writer.run_core(carried)
                else:
                    async with self._write_engine.begin() as connection:
                        result = await connection.run_sync(carried)
        except (OSError, TimeoutError, sa_exc.SQLAlchemyError) as exc:
            if storage_unavailable(exc):
                raise StorageUnavailable(f"database unavailable: {exc}") from exc
            raise
        self.changes.notify()
        return result


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (r["kind"], r["value"]))
