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
