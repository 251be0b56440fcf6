"""The AMI client against a TCP fake playing a recorded transcript in random chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connectors.telephony.inbound.ami import AmiCalls, AmiClient, parse_message
from connectors.telephony.settings import AmiLine
from connectors.telephony.state import TelephonyState
from intake import StateStore
from intake.testing import RecordingPublisher

from .fake_ami import FakeAmi, transcript


def line(port: int = 5038) -> AmiLine:
    return AmiLine.model_validate({
        "id": "asterisk-lab", "adapter": "asterisk_ami", "host": "127.0.0.1", "port": port,
        "username": "intake", "secret": "ami-test-secret", "inbound_contexts": ["from-pstn"],
        "recording_url": "http://127.0.0.1:18090/monitor/{basename}", "settle_s": 0})


def test_a_queue_call_answered_by_an_agent_and_an_internal_call() -> None:
    calls = AmiCalls(line())
    events = [event for raw in transcript("ami_queue_call_mixmonitor.txt").split(b"\r\n\r\n")
              if raw for event in calls.translate(parse_message(raw))]
    assert [(e.call_id, e.type) for e in events] == [
        ("1796527800.1", "ringing"), ("1796527800.1", "ringing"),
        ("1796527800.1", "answered"), ("1796527800.1", "recording"),
        ("1796527800.1", "ended")]
    ringing, agents, answered, recording, _ = events
    assert (ringing.from_raw, ringing.caller_name) == ("013800138000", "王小明")
    assert agents.agents == ["1001"] and answered.agent == "1001"
    assert recording.recording_url == "http://127.0.0.1:18090/monitor/1796527800.1.wav"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmi]:
    fake = FakeAmi(transcript("ami_queue_call_mixmonitor.txt"), refuse_logins=2)
    await fake.start()
    yield fake
    await fake.stop()


async def test_the_client_backs_off_after_refused_logins_then_records_the_call(
        fake: FakeAmi, tmp_path: Path) -> None:
    publisher = RecordingPublisher()
    ami = line(fake.port)
    state = TelephonyState([ami], StateStore(f"sqlite+aiosqlite:///{tmp_path / 's.sqlite3'}"),
                           publisher)
    await state.open()
    client = AmiClient(ami, lambda events: state.accept_all(ami.id, events))
    task = asyncio.create_task(client.run_forever())
    try:
        async with asyncio.timeout(20):
            while not any(m.idempotency_key.endswith(":record") for m in publisher.messages):
                await state.tick()
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await state.close()
    first, second, third = fake.logins[:3]
    assert second - first >= 0.35 and third - second > (second - first) * 1.3  # gaps grow
    assert client.state == "connected"
    keys = [m.idempotency_key for m in publisher.messages]
    assert keys == [f"telephony:asterisk-lab:1796527800.1:{part}"
                    for part in ("ringing", "answered", "ended", "record")]
    record = publisher.messages[-1]
    assert record.call is not None
    assert (record.call.state, record.call.agent, record.call.from_) == (
        "completed", "1001", "+8613800138000")
    assert record.sender.name == "王小明"  # a character split between reads survives
    assert record.call.talk_s == 90.0
    assert record.call.recording_url == "http://127.0.0.1:18090/monitor/1796527800.1.wav"


def _split(raw: bytes, marker: bytes) -> tuple[bytes, bytes]:
    at = raw.index(marker)
    start = raw.rindex(b"\r\n\r\n", 0, at) + 4
    return raw[:start], raw[start:]


async def test_a_reconnect_mid_call_continues_the_call_and_closes_what_the_pbx_dropped(
        tmp_path: Path) -> None:
    """The link drops after the answer; the PBX still lists the call after the reconnect
    (so it goes on and ends normally). A second run where the PBX no longer lists it closes
    it at the reconnect."""
    whole = transcript("ami_queue_call_mixmonitor.txt")
    before, after = _split(whole, b"Event: VarSet")
    live = {"Channel": "PJSIP/trunk-00000001", "Uniqueid": "1796527800.1",
            "Linkedid": "1796527800.1", "Context": "from-pstn"}
    for channels, rest, state in (([[], [live]], after, "completed"),
                                  ([[], []], b"", "completed")):
        fake = FakeAmi([before, rest], channels=channels)
        await fake.start()
        publisher = RecordingPublisher()
        ami = line(fake.port)
        store = StateStore(f"sqlite+aiosqlite:///{tmp_path / f'{len(rest)}.sqlite3'}")
        state_ = TelephonyState([ami], store, publisher)
        await state_.open()
        client = AmiClient(ami, lambda events, s=state_, i=ami.id: s.accept_all(i, events))
        task = asyncio.create_task(client.run_forever())
        try:
            async with asyncio.timeout(20):
                while not any(m.idempotency_key.endswith(":record")
                              for m in publisher.messages):
                    await state_.tick()
                    await asyncio.sleep(0.05)
        finally:
            task.cancel()
            await state_.close()
            await fake.stop()
        assert fake.accepted == 2  # the link dropped once and came back
        record = publisher.messages[-1]
        assert record.call is not None
        assert (record.call.state, record.call.agent) == (state, "1001")
        if rest:
            assert record.call.end_reason == "Normal Clearing"
            assert record.call.recording_url is not None
        else:
            assert record.call.end_reason == "gone_after_reconnect"


async def test_a_call_open_in_the_journal_at_a_restart_ends_when_the_pbx_no_longer_lists_it(
        tmp_path: Path) -> None:
    """The connector restarted mid-call: this client knows no call, the journal does; the PBX
    lists no channel of it after the (re)connect, so it ended meanwhile."""
    whole = transcript("ami_queue_call_mixmonitor.txt")
    first = next(raw for raw in whole.split(b"\r\n\r\n") if b"Event: Newchannel" in raw)
    ringing = AmiCalls(line()).translate(parse_message(first))
    fake = FakeAmi(b"", channels=[[]])
    await fake.start()
    publisher = RecordingPublisher()
    ami = line(fake.port)
    state = TelephonyState([ami], StateStore(f"sqlite+aiosqlite:///{tmp_path / 's.sqlite3'}"),
                           publisher)
    await state.open()
    await state.accept_all(ami.id, ringing)
    client = AmiClient(ami, lambda events: state.accept_all(ami.id, events),
                       lambda: state.open_calls(ami.id))
    task = asyncio.create_task(client.run_forever())
    try:
        async with asyncio.timeout(20):
            while not any(m.idempotency_key.endswith(":record") for m in publisher.messages):
                await state.tick()
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await state.close()
        await fake.stop()
    record = publisher.messages[-1]
    assert record.call is not None
    assert (record.call.call_id, record.call.direction, record.call.state,
            record.call.end_reason) == ("1796527800.1", "inbound", "missed",
                                        "gone_after_reconnect")
