"""cdr_manager's `Event: Cdr` on an AMI line: the PBX's durations confirm the record, and
complete a call whose answer and hangup the link lost; never a second record."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pydantic
import pytest

from connectors.telephony.inbound.ami import AmiCalls, AmiClient, parse_message
from connectors.telephony.normalize import CallEvent, fold
from connectors.telephony.settings import AmiLine
from connectors.telephony.state import TelephonyState
from intake import StateStore
from intake.testing import RecordingPublisher

from .fake_ami import FakeAmi, transcript
from .test_ami import _split, line

CALL = "1796527800.1"


def shanghai(port: int = 5038, settle_s: float = 0) -> AmiLine:
    """The test PBX writes its CDR times in China's time (11:31:40 is 03:31:40 UTC)."""
    return line(port).model_copy(update={"timezone": "Asia/Shanghai", "settle_s": settle_s})


def translated(calls: AmiCalls, raw: bytes) -> list[CallEvent]:
    return [event for message in raw.split(b"\r\n\r\n") if message
            for event in calls.translate(parse_message(message))]


def test_a_cdr_confirms_the_pbx_durations_and_changes_nothing_else() -> None:
    calls = AmiCalls(shanghai())
    events = translated(calls, transcript("ami_queue_call_mixmonitor.txt"))
    cdrs = translated(calls, transcript("ami_queue_call_cdr.txt"))
    assert [(e.call_id, e.type) for e in cdrs] == [(CALL, "cdr")]  # the internal call's: none
    cdr = cdrs[0]
    assert cdr.occurred_at.timestamp() == 1796527900.0  # EndTime in Asia/Shanghai
    assert (cdr.agent, cdr.duration_s, cdr.talk_s, cdr.cause) == ("1001", 100, 90, "ANSWERED")
    calls_only = [e for e in events if e.call_id == CALL]
    alone, confirmed = fold(calls_only, "CN"), fold([*calls_only, cdr], "CN")
    assert (alone.duration_s, alone.talk_s) == (99.9, 90.0)  # computed from the events
    assert (confirmed.duration_s, confirmed.talk_s) == (100, 90)  # the PBX's
    for same in ("state", "started_at", "answered_at", "ended_at", "end_reason", "agent",
                 "legs", "recording_url"):
        assert getattr(confirmed, same) == getattr(alone, same), same
    assert fold([cdr, *reversed(calls_only)], "CN") == confirmed
    # A Cdr of a call this client never knew (older than a restart): nothing.
    assert translated(AmiCalls(shanghai()), transcript("ami_queue_call_cdr.txt")) == []


def test_a_cdr_completes_a_call_whose_answer_and_hangup_the_link_lost() -> None:
    """The link dropped while the agent's phone rang; the call ended meanwhile, so the
    reconnect ends it (`gone_after_reconnect`, at the time of receipt); the batched Cdr that
    comes next says who answered, when, and when it ended."""
    whole = transcript("ami_queue_call_mixmonitor.txt")
    before, _ = _split(whole, b"Event: DialEnd")
    calls = AmiCalls(shanghai(), clock=lambda: 1796528000.0)
    events = translated(calls, before)
    events += calls.reconcile([])
    gone = fold(events, "CN")
    assert (gone.state, gone.end_reason, gone.agent) == ("missed", "gone_after_reconnect", None)
    events += translated(calls, transcript("ami_queue_call_cdr.txt"))
    view = fold(events, "CN")
    assert (view.state, view.agent, view.end_reason) == ("completed", "1001", "ANSWERED")
    assert view.answered_at is not None and view.ended_at is not None
    assert (view.answered_at.timestamp(), view.ended_at.timestamp()) == (
        1796527810.0, 1796527900.0)
    assert (view.duration_s, view.talk_s, view.wait_s) == (100, 90, 9.9)
    assert [leg.agent for leg in view.legs] == ["1001"]


async def test_over_the_link_a_cdr_completes_the_record_and_a_late_one_makes_no_second(
        tmp_path: Path) -> None:
    whole = transcript("ami_queue_call_mixmonitor.txt")
    before, _ = _split(whole, b"Event: DialEnd")
    fake = FakeAmi([before, transcript("ami_queue_call_cdr.txt")], channels=[[], []])
    await fake.start()
    publisher = RecordingPublisher()
    ami = shanghai(fake.port, settle_s=1.0)  # the Cdr comes right after the listing
    state = TelephonyState([ami], StateStore(f"sqlite+aiosqlite:///{tmp_path / 's.sqlite3'}"),
                           publisher)
    await state.open()
    client = AmiClient(ami, lambda events: state.accept_all(ami.id, events),
                       lambda: state.open_calls(ami.id))
    task = asyncio.create_task(client.run_forever())
    try:
        async with asyncio.timeout(20):
            while not any(m.idempotency_key.endswith(":record") for m in publisher.messages):
                await state.tick()
                await asyncio.sleep(0.05)
        record = publisher.messages[-1].call
        assert record is not None
        assert (record.state, record.agent, record.talk_s, record.duration_s) == (
            "completed", "1001", 90, 100)
        assert record.ended_at is not None and record.ended_at.timestamp() == 1796527900.0
        # The same Cdr again (a re-read after a reconnect) and a late one: journaled, but the
        # record is out: no second record, no other message.
        sent = len(publisher.messages)
        cdr = translated(client.calls, transcript("ami_queue_call_cdr.txt"))
        later = cdr[0].model_copy(update={"duration_s": 101.0})
        assert await state.accept_all(ami.id, cdr) == 0
        assert await state.accept_all(ami.id, [later]) == 1
        await state.tick()
        assert len(publisher.messages) == sent
        keys = [m.idempotency_key.rsplit(":", 1)[1] for m in publisher.messages]
        # The answer became known from the Cdr, after the end inferred at the reconnect.
        assert keys == ["ringing", "ended", "answered", "record"]
    finally:
        task.cancel()
        await state.close()
        await fake.stop()



def test_a_timezone_that_is_no_iana_zone_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="not an IANA time zone"):
        AmiLine.model_validate({
            "id": "asterisk-lab", "adapter": "asterisk_ami", "host": "127.0.0.1",
            "username": "intake", "secret": "ami-test-secret", "timezone": "Asia/Nowhere"})
