"""The call state machine on a real SQLite journal, a recording publisher and an injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.telephony.normalize import CallEvent
from connectors.telephony.settings import GenericLine
from connectors.telephony.state import SeenFilter, TelephonyState
from intake import Message, StateStore, Transient
from intake.testing import RecordingPublisher, RefusingPublisher

T0 = datetime(2026, 12, 5, 1, 30, tzinfo=UTC)
LINE = GenericLine(id="hotline", adapter="generic",
                   secret="whsec_aW50YWtlLWhvdGxpbmUtdGVzdC1zZWNyZXQtMDAx",  # type: ignore[arg-type]
                   ring_timeout_s=60, max_call_s=600, settle_s=2)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def event(kind: str, seconds: float, call_id: str = "c1", **fields: object) -> CallEvent:
    return CallEvent.model_validate({"line": "hotline", "call_id": call_id, "type": kind,
                                     "occurred_at": T0 + timedelta(seconds=seconds),
                                     "from_raw": "13800138000", **fields})


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def open_state(tmp_path: Path, publisher: RecordingPublisher, clock: Clock,
                     ) -> TelephonyState:
    state = TelephonyState([LINE], StateStore(f"sqlite+aiosqlite:///{tmp_path / 's.sqlite3'}"),
                           publisher, clock=clock)
    await state.open()
    return state


@pytest.fixture
async def state(tmp_path: Path, clock: Clock) -> AsyncIterator[TelephonyState]:
    state = await open_state(tmp_path, RecordingPublisher(), clock)
    yield state
    await state.close()


def keys(state: TelephonyState) -> list[str]:
    publisher = state.machines["hotline"].publisher
    assert isinstance(publisher, RecordingPublisher)
    return [m.idempotency_key.rsplit(":", 1)[1] for m in publisher.messages]


async def test_an_end_arriving_first_still_publishes_ringing_first_once(
        state: TelephonyState, clock: Clock) -> None:
    assert await state.accept_all("hotline", [event("ended", 60)]) == 1
    assert await state.accept_all("hotline", [event("answered", 5, agent="1001"),
                                              event("ended", 60)]) == 1
    assert keys(state) == ["ringing", "ended", "answered"]
    clock.now += 1
    assert await state.tick() == 0  # settling: a straggler may still come
    clock.now += 2
    assert await state.tick() == 1
    record = state.machines["hotline"].publisher.messages[-1]  # type: ignore[attr-defined]
    assert record.call.state == "completed" and record.call.agent == "1001"
    assert await state.accept_all("hotline", [event("answered", 6, agent="1002")]) == 1
    clock.now += 10
    assert await state.tick() == 0
    assert keys(state) == ["ringing", "ended", "answered", "record"]


async def test_a_call_rung_past_the_ring_timeout_closes_as_missed_end_inferred(
        state: TelephonyState, clock: Clock) -> None:
    await state.accept_all("hotline", [event("ringing", 0)])
    clock.now += 59
    assert await state.tick() == 0
    clock.now += 2
    assert await state.tick() == 1
    record = state.machines["hotline"].publisher.messages[-1]  # type: ignore[attr-defined]
    assert record.call.state == "missed"
    assert set(record.flags) >= {"end_inferred", "callback"}
    assert record.call.ended_at == T0 + timedelta(seconds=61)
    assert keys(state) == ["ringing", "ended", "record"]


async def test_a_restart_mid_call_loses_nothing_and_creates_nothing_twice(
        tmp_path: Path, clock: Clock) -> None:
    first = await open_state(tmp_path, RecordingPublisher(), clock)
    await first.accept_all("hotline", [event("ringing", 0), event("answered", 3, agent="1001")])
    await first.close()
    publisher = RecordingPublisher()
    second = await open_state(tmp_path, publisher, clock)
    assert await second.accept_all("hotline", [event("answered", 3, agent="1001")]) == 0
    await second.accept_all("hotline", [event("ended", 100)])
    clock.now += 5
    assert await second.tick() == 1
    assert [m.idempotency_key.rsplit(":", 1)[1] for m in publisher.messages] == [
        "ended", "record"]
    assert publisher.messages[-1].call is not None
    assert publisher.messages[-1].call.talk_s == 97.0
    await second.close()


async def test_a_live_call_recovered_from_the_journal_keeps_its_arrival_times(
        tmp_path: Path, clock: Clock) -> None:
    # The process dies after journaling the events and before anything else (here: neither
    # broker nor outbox took the progress). The journal alone must say when they arrived,
    # else the rebuilt call looks rung since the epoch and closes at once as missed.
    first = await open_state(tmp_path, RefusingPublisher(), clock)
    with pytest.raises(Transient):
        await first.accept_all("hotline", [event("ringing", 0)])
    with pytest.raises(Transient):
        await first.accept_all("hotline", [event("answered", 3, agent="1001")])
    await first.close()
    clock.now += 1
    publisher = RecordingPublisher()
    second = await open_state(tmp_path, publisher, clock)
    assert await second.tick() == 0  # answered 1 s ago: still talking
    # ... and the progress the broker never took goes out without the PBX sending again.
    assert [m.idempotency_key.rsplit(":", 1)[1] for m in publisher.messages] == [
        "ringing", "answered"]
    await second.accept_all("hotline", [event("ended", 100)])
    clock.now += 5
    assert await second.tick() == 1
    record = publisher.messages[-1]
    assert record.call is not None and record.call.state == "completed"
    assert record.call.talk_s == 97.0 and "end_inferred" not in record.flags
    assert [m.idempotency_key.rsplit(":", 1)[1] for m in publisher.messages] == [
        "ringing", "answered", "ended", "record"]
    await second.close()


async def test_an_end_recovered_from_the_journal_is_recorded_after_settling(
        tmp_path: Path, clock: Clock) -> None:
    first = await open_state(tmp_path, RecordingPublisher(), clock)
    await first.accept_all("hotline", [event("ringing", 0)])
    first.machines["hotline"].publisher = RefusingPublisher()
    clock.now += 10
    with pytest.raises(Transient):
        await first.accept_all("hotline", [event("missed", 10)])
    await first.close()
    second = await open_state(tmp_path, RecordingPublisher(), clock)
    clock.now += LINE.settle_s + 1  # not the ring timeout: the end arrived 3 s ago
    assert await second.tick() == 1
    await second.close()


async def test_a_thousand_interleaved_calls_make_a_thousand_records(
        state: TelephonyState, clock: Clock) -> None:
    calls = [f"c{i}" for i in range(1000)]
    for kind, at in (("ringing", 0), ("answered", 5), ("ended", 50)):
        for call_id in calls:
            extra = {"agent": "1001"} if kind == "answered" else {}
            await state.accept_all("hotline", [event(kind, at, call_id, **extra)])
    clock.now += 3
    assert await state.tick() == 1000
    messages = state.machines["hotline"].publisher.messages  # type: ignore[attr-defined]
    records = [m for m in messages if m.idempotency_key.endswith(":record")]
    assert len(records) == len({m.idempotency_key for m in records}) == 1000
    assert len(messages) == 4000


async def test_a_recorded_call_is_pruned_from_the_journal_after_its_keep_time(
        state: TelephonyState, clock: Clock) -> None:
    machine = state.machines["hotline"]
    machine.journal_keep_s = 100
    await state.accept_all("hotline", [event("ringing", 0), event("ended", 30)])
    clock.now += 3
    assert await state.tick() == 1 and machine.live() == 0
    clock.now += 50
    await state.tick()
    assert "c1" in machine.calls  # kept for late events
    assert await state.accept_all("hotline", [event("ended", 30)]) == 0
    clock.now += 60
    await state.tick()
    assert machine.calls == {} and await machine.events.items() == []
    assert await machine.meta.items() == []


CALL_EVENTS = [event("ringing", 0, agents=["1001"]), event("answered", 9, agent="1001"),
               event("recording", 95, recording_url="http://127.0.0.1:18090/c1.wav"),
               event("ended", 99)]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(CALL_EVENTS), repeats=st.lists(st.integers(0, 3), max_size=4))
def test_any_arrival_order_publishes_each_state_once_and_the_same_record(
        order: list[CallEvent], repeats: list[int]) -> None:
    async def run() -> list[Message]:
        clock = Clock()
        publisher = RecordingPublisher()
        state = TelephonyState([LINE], StateStore("sqlite+aiosqlite:///:memory:"), publisher,
                               clock=clock)
        await state.open()
        for item in [*order, *(order[i] for i in repeats)]:
            await state.accept_all("hotline", [item])
        clock.now += 3
        await state.tick()
        await state.close()
        return publisher.messages

    messages = asyncio.run(run())
    parts = [m.idempotency_key.rsplit(":", 1)[1] for m in messages]
    assert parts[0] == "ringing" and parts[-1] == "record"
    assert sorted(parts) == ["answered", "ended", "record", "ringing"]
    record = messages[-1]
    assert record.call is not None
    assert (record.call.state, record.call.agent, record.call.talk_s, record.call.wait_s) == (
        "completed", "1001", 90.0, 9.0)
    assert record.call.recording_url == "http://127.0.0.1:18090/c1.wav"


async def test_a_journal_written_before_arrival_times_is_read_with_its_calls_times(
        tmp_path: Path, clock: Clock) -> None:
    store = StateStore(f"sqlite+aiosqlite:///{tmp_path / 's.sqlite3'}")
    await store.open()
    ringing = event("ringing", 0)
    await store.namespace("telephony:events:hotline").put(
        f"c1\x1f{ringing.digest}", ringing.model_dump(mode="json"))
    await store.namespace("telephony:calls:hotline").put("c1", {
        "published": ["ringing"], "first_received": clock.now, "last_received": clock.now,
        "terminal_received": None, "answered_received": None, "recorded_at": None})
    await store.close()
    state = await open_state(tmp_path, RecordingPublisher(), clock)
    call = state.machines["hotline"].calls["c1"]
    assert (call.first_received, call.published) == (clock.now, ["ringing"])
    clock.now += 30
    assert await state.tick() == 0  # rung 30 s ago, not since the epoch
    await state.close()


async def test_webhook_ids_are_remembered_across_a_restart_and_new_ones_read_nothing(
        tmp_path: Path, clock: Clock) -> None:
    first = await open_state(tmp_path, RecordingPublisher(), clock)
    await first.remember("hotline", "msg_1")
    assert await first.seen("hotline", "msg_1")
    await first.close()
    second = await open_state(tmp_path, RecordingPublisher(), clock)
    assert await second.seen("hotline", "msg_1")  # the filter was loaded from the store
    ids = second._webhook_ids["hotline"]

    async def unreadable(key: str, default: object = None) -> object:
        raise AssertionError("a new webhook id should not be read from the store")

    ids.get = unreadable  # type: ignore[method-assign]
    # With one id in a filter sized for a million, a false positive (which would read, and
    # fail here) is practically impossible.
    assert not any([await second.seen("hotline", f"msg_new_{i}") for i in range(200)])
    await second.close()


async def test_a_full_webhook_id_filter_leaves_the_store_to_decide(
        tmp_path: Path, clock: Clock) -> None:
    state = await open_state(tmp_path, RecordingPublisher(), clock)
    assert state._filter is not None
    state._filter = SeenFilter(capacity=3)
    for i in range(3):
        await state.remember("hotline", f"msg_{i}")
    assert state._filter is None
    assert await state.seen("hotline", "msg_2") and not await state.seen("hotline", "msg_9")
    clock.now += 48 * 3600
    assert not await state.seen("hotline", "msg_2")  # expired
    await state.close()


async def test_the_sweep_forgets_expired_webhook_ids_past_its_first_page(
        state: TelephonyState, clock: Clock) -> None:
    state.SWEEP_PAGE = 4  # type: ignore[misc]
    for i in range(10):
        await state.remember("hotline", f"old-{i:02d}")
    clock.now += state.webhook_id_ttl_s - 1
    await state.remember("hotline", "new")  # key order puts it before every "old-…"
    clock.now += 700
    await state.tick()
    ids = state._webhook_ids["hotline"]
    assert [key for key, _ in await ids.items(limit=100)] == ["new"]


class SlowPublisher(RecordingPublisher):
    """A broker whose confirms take a while; refuses the calls in `refusing` (an outbox full)
    and counts the publishes in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.refusing: set[str] = set()
        self.in_flight = self.most_in_flight = 0

    async def publish(self, message: Message, exchange: str = "inbound", *,
                      timeout: float | None = None) -> None:
        assert message.call is not None
        if message.call.call_id in self.refusing:
            raise Transient("broker down and outbox unwritable", reason="outbox_unwritable")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.02)
            await super().publish(message, exchange, timeout=timeout)
        finally:
            self.in_flight -= 1


async def test_progress_owed_after_a_rebuild_goes_out_for_all_calls_together(
        tmp_path: Path, clock: Clock) -> None:
    """Forty calls journaled while nothing could be published: after the restart the first
    tick publishes what each owes, the calls together, each call's states in order; a call
    still refused stays owed and goes out on a later tick."""
    calls = [f"c{i}" for i in range(40)]
    first = await open_state(tmp_path, RefusingPublisher(), clock)
    for call_id in calls:
        for owed in (event("ringing", 0, call_id), event("answered", 3, call_id, agent="1001")):
            with pytest.raises(Transient):  # journaled, not published
                await first.accept_all("hotline", [owed])
    await first.close()
    publisher = SlowPublisher()
    publisher.refusing = {"c7"}
    second = await open_state(tmp_path, publisher, clock)
    await second.tick()
    sent = [(m.call.call_id, m.idempotency_key.rsplit(":", 1)[1])
            for m in publisher.messages if m.call is not None]
    assert sorted(sent) == sorted((c, s) for c in calls if c != "c7"
                                  for s in ("ringing", "answered"))
    for call_id in calls:
        mine = [s for c, s in sent if c == call_id]
        assert mine == ([] if call_id == "c7" else ["ringing", "answered"])
    assert publisher.most_in_flight > 1  # not one call after another
    assert second.machines["hotline"].unpublished == {"c7"}
    publisher.refusing.clear()
    await second.tick()
    assert [m.idempotency_key.rsplit(":", 1)[1] for m in publisher.messages
            if m.call is not None and m.call.call_id == "c7"] == ["ringing", "answered"]
    assert second.machines["hotline"].unpublished == set()
    await second.close()
