"""The call state machine of a line and its durable journal (the kernel's connector state store).

Every accepted event is written to the journal (fsynced) before its source hears success; the
live calls are rebuilt from it at start. Per call the machine publishes each live state at most
once (`ringing` first, however the events arrive), then the record, `settle_s` (+ the line's
`wrap_up_s`) after the first terminal event, or at a timeout counted on the gateway clock from
receipt. What was published is noted in the journal after the publish is durable, so a crash
in between publishes it again (a duplicate the ticket core's idempotency key absorbs).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from intake import IntakeError, Message, StateNamespace, StateStore, Transient, get_logger

from .normalize import LIVE_STATES, CallEvent, CallView, fold, progress_message, record_message
from .settings import LineBase

log = get_logger(service="telephony", component="calls")

Clock = Callable[[], float]


class Publishing(Protocol):
    async def publish(self, message: Message, exchange: str = "inbound", *,
                      timeout: float | None = None) -> None: ...


class Recordings(Protocol):
    """What the machine asks of the recording fetcher (client.RecordingFetcher)."""

    async def attach(self, message: Message, view: CallView) -> Message: ...

    async def follow_up(self, view: CallView, url: str) -> None: ...


@dataclass
class LiveCall:
    """What the machine knows of one call: its events, when each arrived, what it published."""

    call_id: str
    events: dict[str, CallEvent] = field(default_factory=dict)  # digest -> event
    published: list[str] = field(default_factory=list)  # live states, and "record"
    first_received: float = 0.0
    last_received: float = 0.0
    terminal_received: float | None = None
    answered_received: float | None = None
    recorded_at: float | None = None

    def add(self, digest: str, event: CallEvent, received: float) -> None:
        """Take `event`, arrived at `received` (gateway clock); any order, as a rebuild reads
        the journal in key order."""
        self.events[digest] = event
        self.first_received = min(self.first_received or received, received)
        self.last_received = max(self.last_received, received)
        if event.terminal:
            self.terminal_received = min(self.terminal_received or received, received)
        if event.type in ("answered", "transferred"):
            self.answered_received = min(self.answered_received or received, received)

    def meta(self) -> dict[str, Any]:
        # The arrival times live with each event in the journal, not here: this is written
        # after the publishes, so a crash before it must not lose when the events came.
        return {"published": self.published, "recorded_at": self.recorded_at}

    def restore(self, meta: dict[str, Any]) -> None:
        self.published = list(meta.get("published", []))
        self.recorded_at = meta.get("recorded_at")


class CallMachine:
    """One line's calls. `accept` journals an event and publishes what it makes due now;
    `tick` publishes records whose settle time passed and closes calls that timed out."""

    # Records in flight at once (each holds its call's lock, a publish and a journal note).
    RECORDING_AT_ONCE = 256

    def __init__(self, line: LineBase, store: StateStore, publisher: Publishing, *,
                 clock: Clock = time.time, journal_keep_s: float = 24 * 3600.0,
                 recordings: Recordings | None = None) -> None:
        self.line = line
        self.publisher = publisher
        self.clock = clock
        self.journal_keep_s = journal_keep_s
        # Fetches the recording before the record goes out, or after it (client.py).
        self.recordings = recordings
        self.events: StateNamespace = store.namespace(f"telephony:events:{line.id}")
        self.meta: StateNamespace = store.namespace(f"telephony:calls:{line.id}")
        self.calls: dict[str, LiveCall] = {}
        # The timer looks at live calls only; recorded ones wait in order for their pruning.
        self.live_ids: dict[str, None] = {}
        self.recorded: deque[tuple[float, str]] = deque()
        # Live calls whose due progress may not be out: rebuilt ones, and those whose publish
        # failed (an AMI or ESL event is not sent again the way a webhook is).
        self.unpublished: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    # -- start -----------------------------------------------------------------------------

    async def rebuild(self) -> int:
        """Load the journal; returns how many calls are still live (not yet recorded)."""
        metas = dict(await self.meta.items(limit=10_000_000))
        for key, value in await self.events.items(limit=10_000_000):
            call_id, _, digest = key.rpartition("\x1f")
            if "received_at" in value:
                received = float(value["received_at"])
                event = CallEvent.model_validate(value["event"])
            else:  # a journal written before events kept their arrival: the call's times
                event = CallEvent.model_validate(value)
                received = _legacy_received(metas.get(call_id, {}), event, self.clock())
            self._call(call_id).add(digest, event, received)
        for call_id, value in metas.items():
            self._call(call_id).restore(value)
        self.live_ids = {call_id: None for call_id, call in self.calls.items()
                         if call.recorded_at is None}
        self.unpublished = set(self.live_ids)
        self.recorded = deque(sorted((call.recorded_at, call_id)
                                     for call_id, call in self.calls.items()
                                     if call.recorded_at is not None))
        live = len(self.live_ids)
        log.info("calls_rebuilt", line=self.line.id, calls=len(self.calls), live=live)
        return live

    # -- events ----------------------------------------------------------------------------

    async def accept(self, event: CallEvent) -> bool:
        """Journal `event` and publish the progress it makes due; False for a duplicate.

        Returns once both are durable; raises what the journal or the publisher raised (the
        event may then be journaled already: sent again, it is a duplicate whose progress is
        published then).
        """
        async with self._lock(event.call_id):
            call = self._call(event.call_id)
            digest = event.digest
            now = self.clock()
            # The arrival goes into the journal with the event: timeouts and settling count
            # from it, and a rebuild after a crash has nothing else to go by.
            fresh = digest not in call.events and await self.events.put_new(
                f"{event.call_id}\x1f{digest}",
                {"event": event.model_dump(mode="json"), "received_at": now})
            if fresh:
                call.add(digest, event, now)
            elif call.recorded_at is not None:
                return False
            if fresh and call.recorded_at is not None and event.recording_url \
                    and self.recordings is not None:
                # A recording after the record: it follows on the record's ticket.
                await self.recordings.follow_up(self.view(call), event.recording_url)
            try:
                await self._publish_due(call)
            except BaseException:
                self.unpublished.add(call.call_id)
                raise
            return fresh

    async def _publish_due(self, call: LiveCall) -> None:
        published = len(call.published)
        await self._publish_progress(call)
        if len(call.published) != published:
            await self.meta.put(call.call_id, call.meta())

    async def _publish_progress(self, call: LiveCall) -> None:
        if call.recorded_at is not None or not call.events:
            return
        view = self.view(call)
        if view.direction == "outbound":
            return  # an outbound call publishes only its record
        due = ["ringing"]
        if view.answered_at is not None:
            due.append("answered")
        if view.terminal:
            due.append("ended")
        for state in LIVE_STATES:
            if state in due and state not in call.published:
                await self.publisher.publish(progress_message(
                    view, state, received_at=_utc(self.clock())))
                call.published.append(state)

    # -- the timer -------------------------------------------------------------------------

    async def tick(self) -> int:
        """Publish due records and close timed-out calls; returns how many were recorded."""
        now = self.clock()
        recorded = 0
        while self.recorded and now - self.recorded[0][0] > self.journal_keep_s:
            _, call_id = self.recorded.popleft()
            pruned = self.calls.get(call_id)
            if pruned is not None and pruned.recorded_at is not None:
                await self._prune(pruned)
        if self.unpublished:
            await self._publish_owed()
        due: list[tuple[LiveCall, datetime | None]] = []
        for call_id in list(self.live_ids):
            call = self.calls[call_id]
            inferred = self._timeout(call, now)
            if call.terminal_received is not None:
                if now < call.terminal_received + self.line.settle_s + self.line.wrap_up_s:
                    continue
            elif inferred is None:
                continue
            due.append((call, inferred))
        # The due records go out together: each publish waits for its own confirm (or its
        # outbox append), and one after another the timer recorded no faster than one
        # confirm and one journal commit a call (about 40 calls/s). Together the confirms
        # overlap and the journal notes share a group commit.
        slots = asyncio.Semaphore(self.RECORDING_AT_ONCE)
        outcomes = await asyncio.gather(*(self._record_due(call, inferred, slots)
                                          for call, inferred in due), return_exceptions=True)
        for (call, _), outcome in zip(due, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                # Neither broker nor outbox (or the journal): still live, the next tick.
                log.warning("call_record_deferred", line=self.line.id, call_id=call.call_id,
                            error=str(outcome))
            else:
                recorded += outcome
        return recorded

    async def _publish_owed(self) -> None:
        """The progress rebuilt calls and failed publishes still owe, the calls together (as
        the due records: one after another a rebuild of many live calls waited one confirm
        per message); each call's states in order under its lock. A call whose publish fails
        stays owed for the next tick."""
        owed = [call_id for call_id in self.unpublished if call_id in self.calls]
        self.unpublished.intersection_update(owed)
        slots = asyncio.Semaphore(self.RECORDING_AT_ONCE)

        async def publish(call_id: str) -> None:
            async with slots, self._lock(call_id):
                await self._publish_due(self.calls[call_id])
                # Under the lock: an event's failed publish may owe the call again after it.
                self.unpublished.discard(call_id)

        outcomes = await asyncio.gather(*(publish(call_id) for call_id in owed),
                                        return_exceptions=True)
        failed: list[Exception] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                failed.append(outcome)  # neither broker nor outbox: the next tick
        if failed:
            log.warning("call_progress_deferred", line=self.line.id, calls=len(failed),
                        error=str(failed[0]))

    async def _record_due(self, call: LiveCall, inferred: datetime | None,
                          slots: asyncio.Semaphore) -> bool:
        async with slots, self._lock(call.call_id):
            if call.recorded_at is not None or not call.events:
                return False  # recorded meanwhile (a PBX client's event raced the timer)
            await self._record(call, inferred)
            return True

    def _timeout(self, call: LiveCall, now: float) -> datetime | None:
        """When a call without a terminal event ends by timeout: the last event's time plus
        the time since it was received (never PBX clocks against ours)."""
        if call.terminal_received is not None or not call.events:
            return None
        limit = (self.line.max_call_s if call.answered_received is not None
                 else self.line.ring_timeout_s)
        since = call.answered_received or call.first_received
        if now - since < limit:
            return None
        last = max(e.occurred_at for e in call.events.values())
        return last + timedelta(seconds=now - call.last_received)

    async def _record(self, call: LiveCall, inferred: datetime | None) -> None:
        view = self.view(call, inferred_end=inferred)
        if view.direction == "inbound" and "ended" not in call.published:
            await self._publish_progress(call)
            if "ended" not in call.published:  # a timeout: the progress has no end event
                for state in ("ringing", "ended"):
                    if state not in call.published:
                        await self.publisher.publish(progress_message(
                            view, state, received_at=_utc(self.clock())))
                        call.published.append(state)
        message = record_message(
            view, language=self.line.summary_language,
            join_latest_open=self.line.when_unpicked == "latest_open_ticket",
            received_at=_utc(self.clock()))
        if self.recordings is not None:
            message = await self.recordings.attach(message, view)
        await self.publisher.publish(message)
        call.published.append("record")
        call.recorded_at = self.clock()
        self.live_ids.pop(call.call_id, None)
        self.recorded.append((call.recorded_at, call.call_id))
        await self.meta.put(call.call_id, call.meta())
        log.info("call_recorded", line=self.line.id, call_id=call.call_id, state=view.state,
                 idempotency_key=message.idempotency_key)

    async def _prune(self, call: LiveCall) -> None:
        for digest in list(call.events):
            await self.events.delete(f"{call.call_id}\x1f{digest}")
        await self.meta.delete(call.call_id)
        self.calls.pop(call.call_id, None)
        self._locks.pop(call.call_id, None)

    # -- views -----------------------------------------------------------------------------

    def view(self, call: LiveCall, *, inferred_end: datetime | None = None) -> CallView:
        return fold(list(call.events.values()), self.line.region, inferred_end=inferred_end)

    def live(self) -> int:
        return len(self.live_ids)

    def open_calls(self) -> list[str]:
        """Live calls no terminal event closed yet (what a PBX client reconciles after a
        reconnect)."""
        return [call_id for call_id in self.live_ids
                if self.calls[call_id].terminal_received is None]

    def _call(self, call_id: str) -> LiveCall:
        call = self.calls.get(call_id)
        if call is None:
            call = self.calls[call_id] = LiveCall(call_id)
            self.live_ids[call_id] = None
        return call

    def _lock(self, call_id: str) -> asyncio.Lock:
        lock = self._locks.get(call_id)
        if lock is None:
            lock = self._locks[call_id] = asyncio.Lock()
        return lock


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _legacy_received(meta: dict[str, Any], event: CallEvent, now: float) -> float:
    """An older journal's event without its arrival time: the best its call's meta knew."""
    if event.terminal and meta.get("terminal_received") is not None:
        return float(meta["terminal_received"])
    if event.type in ("answered", "transferred") and meta.get("answered_received") is not None:
        return float(meta["answered_received"])
    return float(meta.get("last_received") or meta.get("first_received") or now)


class SeenFilter:
    """Which webhook ids may have been remembered: a Bloom filter (10 bits an id, 7 probes,
    about 1 % false positives), so that a new id, nearly every request, costs no read of the
    store. Never a false negative; a false positive reads the store. Only sound where no other
    process remembers ids (the SQLite store is this process's own)."""

    PROBES = 7

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.bits = bytearray(capacity * 10 // 8 + 1)
        self.size = len(self.bits) * 8
        self.count = 0

    def _positions(self, key: str) -> list[int]:
        digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
        first = int.from_bytes(digest[:8], "little")
        step = int.from_bytes(digest[8:], "little") | 1
        return [(first + i * step) % self.size for i in range(self.PROBES)]

    def add(self, key: str) -> None:
        for position in self._positions(key):
            self.bits[position >> 3] |= 1 << (position & 7)
        self.count += 1

    def may_contain(self, key: str) -> bool:
        return all(self.bits[p >> 3] & (1 << (p & 7)) for p in self._positions(key))


class TelephonyState:
    """The journal store, one machine per line, and the webhook ids seen (48 h)."""

    # Webhook ids the filter holds at least; four times those in the store at start.
    FILTER_CAPACITY = 1_000_000

    def __init__(self, lines: list[LineBase], store: StateStore, publisher: Publishing, *,
                 clock: Clock = time.time, journal_keep_s: float = 24 * 3600.0,
                 webhook_id_ttl_s: float = 48 * 3600.0,
                 recordings: Recordings | None = None) -> None:
        self.store = store
        self.clock = clock
        self.webhook_id_ttl_s = webhook_id_ttl_s
        self.machines = {line.id: CallMachine(line, store, publisher, clock=clock,
                                              journal_keep_s=journal_keep_s,
                                              recordings=recordings)
                         for line in lines}
        self._webhook_ids = {line.id: store.namespace(f"telephony:webhook-ids:{line.id}")
                             for line in lines}
        self._last_sweep = 0.0
        self._filter: SeenFilter | None = None
        # The PBX clients by line (AMI, ESL), for `/readyz`: each has `state` and `detail`.
        self.clients: dict[str, Any] = {}

    async def open(self) -> None:
        await self.store.open()
        for machine in self.machines.values():
            await machine.rebuild()
        if self.store.dialect == "sqlite":
            await self._load_filter()

    async def _load_filter(self) -> None:
        ids: list[str] = []
        for line, namespace in self._webhook_ids.items():
            start: str | None = None
            while page := await namespace.items(limit=50_000, start=start):
                ids += (f"{line}\x1f{key}" for key, _ in page if key != start)
                if len(page) < 50_000:
                    break
                start = page[-1][0]
        self._filter = SeenFilter(max(self.FILTER_CAPACITY, 4 * len(ids)))
        for key in ids:
            self._filter.add(key)

    async def close(self) -> None:
        await self.store.close()

    def line(self, line_id: str) -> LineBase | None:
        machine = self.machines.get(line_id)
        return machine.line if machine is not None else None

    async def accept_all(self, line_id: str, events: list[CallEvent]) -> int:
        """Journal and publish each event in order; how many were new. Raises Transient when
        neither the journal nor the publisher can take them (the source sends them again)."""
        machine = self.machines[line_id]
        fresh = 0
        for event in events:
            try:
                fresh += await machine.accept(event)
            except IntakeError:
                raise
            except Exception as exc:  # the journal's database, whatever its driver raises
                raise Transient(f"the call journal is not writable: {exc}",
                                reason="journal_unwritable") from exc
        return fresh

    def view(self, line_id: str, call_id: str) -> CallView | None:
        machine = self.machines.get(line_id)
        call = machine.calls.get(call_id) if machine is not None else None
        return machine.view(call) if machine is not None and call and call.events else None

    def open_calls(self, line_id: str) -> list[str]:
        return self.machines[line_id].open_calls()

    async def seen(self, line: str, webhook_id: str) -> bool:
        """True when this webhook id was accepted on the line within the last 48 h."""
        if self._filter is not None and not self._filter.may_contain(f"{line}\x1f{webhook_id}"):
            return False  # never remembered: no need to ask the store
        stamp = await self._webhook_ids[line].get(webhook_id)
        return stamp is not None and self.clock() - float(stamp) < self.webhook_id_ttl_s

    async def remember(self, line: str, webhook_id: str) -> None:
        await self._webhook_ids[line].put(webhook_id, self.clock())
        if self._filter is not None:
            self._filter.add(f"{line}\x1f{webhook_id}")
            if self._filter.count >= self._filter.capacity:
                # Past its size it would answer "maybe" to everything: the store decides
                # until the next start sizes a larger one.
                log.warning("webhook_id_filter_full", capacity=self._filter.capacity)
                self._filter = None

    async def tick(self) -> int:
        recorded = 0
        for machine in self.machines.values():
            recorded += await machine.tick()
        now = self.clock()
        if now - self._last_sweep > 600:  # forget expired webhook ids now and then
            self._last_sweep = now
            for ids in self._webhook_ids.values():
                await self._forget_expired(ids, now)
        return recorded

    # Webhook ids read per page by the sweep (every id of a line, page after page).
    SWEEP_PAGE = 10_000

    async def _forget_expired(self, ids: StateNamespace, now: float) -> None:
        start: str | None = None
        while page := await ids.items(limit=self.SWEEP_PAGE, start=start):
            for key, stamp in page:
                if key != start and now - float(stamp) >= self.webhook_id_ttl_s:
                    await ids.delete(key)
            if len(page) < self.SWEEP_PAGE:
                break
            start = page[-1][0]
