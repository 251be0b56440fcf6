"""The FreeSWITCH event socket client against a TCP fake, events split at random."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from connectors.telephony.inbound.esl import EslCalls, EslClient, channel_rows, parse_headers
from connectors.telephony.normalize import CallEvent
from connectors.telephony.settings import EslLine
from connectors.telephony.state import TelephonyState
from intake import Message, StateStore
from intake.testing import RecordingPublisher

from .fake_esl import FakeEsl, event

A, B = "a-leg-0001", "b-leg-0002"
T = 1796527800_000000  # µs
TRANSCRIPT = b"".join([
    event(Event_Name="CHANNEL_CREATE", Unique_ID=A, Channel_Call_UUID=A,
          Call_Direction="inbound", Caller_Context="public",
          Caller_Caller_ID_Number="+8613800138000", Caller_Caller_ID_Name="李雷",
          Caller_Destination_Number="4008001234", Event_Date_Timestamp=str(T)),
    event(Event_Name="CHANNEL_ANSWER", Unique_ID=A, Channel_Call_UUID=A,
          Channel_Name="sofia/external/+8613800138000@carrier",
          Event_Date_Timestamp=str(T + 1_000_000)),  # the IVR answers: no answer
    event(Event_Name="CHANNEL_CREATE", Unique_ID=B, Other_Leg_Unique_ID=A,
          Call_Direction="outbound", Channel_Name="sofia/internal/1001@10.0.0.5",
          Event_Date_Timestamp=str(T + 5_000_000)),
    event(Event_Name="CHANNEL_ANSWER", Unique_ID=B, Other_Leg_Unique_ID=A,
          Channel_Name="sofia/internal/1001@10.0.0.5", Event_Date_Timestamp=str(T + 9_000_000)),
    event(Event_Name="RECORD_STOP", Unique_ID=A, Record_File_Path="/var/rec/a-leg-0001.wav",
          Event_Date_Timestamp=str(T + 99_000_000)),
    event(Event_Name="CHANNEL_HANGUP_COMPLETE", Unique_ID=A, Hangup_Cause="NORMAL_CLEARING",
          variable_duration="99", variable_billsec="90", Event_Date_Timestamp=str(T + 99_000_000)),
])


def line(port: int) -> EslLine:
    return EslLine.model_validate({
        "id": "freeswitch-lab", "adapter": "freeswitch_esl", "host": "127.0.0.1", "port": port,
        "password": "ClueCon-test-esl", "settle_s": 0,
        "recording_url": "http://127.0.0.1:18090/fs/{basename}"})


async def test_a_refused_auth_is_retried_then_the_call_is_recorded(tmp_path: Path) -> None:
    fake = FakeEsl(TRANSCRIPT, refuse_logins=1)
    await fake.start()
    publisher = RecordingPublisher()
    esl = line(fake.port)
    state = TelephonyState([esl], StateStore(f"sqlite+aiosqlite:///{tmp_path / 's.sqlite3'}"),
                           publisher)
    await state.open()
    client = EslClient(esl, lambda events: state.accept_all(esl.id, events))
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
    assert fake.logins == 2 and fake.subscriptions[0].startswith("event plain CHANNEL_CREATE")
    assert [m.idempotency_key.rsplit(":", 1)[1] for m in publisher.messages] == [
        "ringing", "answered", "ended", "record"]
    record = publisher.messages[-1]
    assert record.call is not None and record.sender.name == "李雷"
    assert (record.call.state, record.call.agent, record.call.agents) == (
        "completed", "1001", ["1001"])
    assert (record.call.wait_s, record.call.talk_s, record.call.duration_s) == (9.0, 90.0, 99.0)
    assert record.call.recording_url == "http://127.0.0.1:18090/fs/a-leg-0001.wav"
    assert record.call.end_reason == "NORMAL_CLEARING"


async def run_until_recorded(fake: FakeEsl, tmp_path: Path, *,
                             before: list[CallEvent] | None = None) -> list[Message]:
    """A client on `fake` until a record is out; `before` are journaled first (a call open
    in the journal when the connector restarts)."""
    await fake.start()
    publisher = RecordingPublisher()
    esl = line(fake.port)
    state = TelephonyState([esl], StateStore(f"sqlite+aiosqlite:///{tmp_path / 's.sqlite3'}"),
                           publisher)
    await state.open()
    if before:
        await state.accept_all(esl.id, before)
    client = EslClient(esl, lambda events: state.accept_all(esl.id, events),
                       lambda: state.open_calls(esl.id))
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
    assert all(c == "api show channels as json" for c in fake.commands)
    assert len(fake.commands) == fake.accepted  # after every (re)connect
    return publisher.messages


A_ROW = {"uuid": A, "direction": "inbound", "created_epoch": str(T // 1_000_000),
         "name": "sofia/external/+8613800138000@carrier", "state": "CS_EXECUTE",
         "cid_name": "李雷", "cid_num": "+8613800138000", "dest": "4008001234",
         "context": "public", "callstate": "ACTIVE", "call_uuid": A}
B_ROW = {"uuid": B, "direction": "outbound", "name": "sofia/internal/1001@10.0.0.5",
         "state": "CS_EXCHANGE_MEDIA", "context": "default", "callstate": "ACTIVE",
         "call_uuid": A}


def frames(*names: str) -> bytes:
    """The transcript's frames whose event is one of `names`, in order."""
    parts = TRANSCRIPT.split(b"Content-Length: ")[1:]
    return b"".join(b"Content-Length: " + p for p in parts
                    if any(f"Event-Name: {n}\n".encode() in p for n in names))


async def test_a_call_still_listed_after_a_reconnect_goes_on_and_ends_normally(
        tmp_path: Path) -> None:
    before = TRANSCRIPT.split(b"Content-Length: ")
    first = b"".join(b"Content-Length: " + p for p in before[1:5])  # up to the agent's answer
    rest = b"".join(b"Content-Length: " + p for p in before[5:])
    fake = FakeEsl([first, rest], channels=[[], [A_ROW, B_ROW]])
    messages = await run_until_recorded(fake, tmp_path)
    assert fake.accepted == 2  # the link dropped mid-call and came back
    record = messages[-1]
    assert record.call is not None
    assert (record.call.state, record.call.agent, record.call.end_reason) == (
        "completed", "1001", "NORMAL_CLEARING")
    assert [m.idempotency_key.rsplit(":", 1)[1] for m in messages] == [
        "ringing", "answered", "ended", "record"]


async def test_a_call_the_pbx_dropped_while_the_link_was_down_ends_at_the_reconnect(
        tmp_path: Path) -> None:
    first = frames("CHANNEL_CREATE", "CHANNEL_ANSWER")
    fake = FakeEsl([first, b""], channels=[[], []])
    record = (await run_until_recorded(fake, tmp_path))[-1]
    assert record.call is not None
    assert (record.call.state, record.call.agent, record.call.end_reason) == (
        "completed", "1001", "gone_after_reconnect")


async def test_a_live_call_unknown_to_the_connector_is_adopted_with_its_agent(
        tmp_path: Path) -> None:
    # Rung 30 s ago: the agent's answer is not listed with a time, it is taken at receipt.
    created = int(time.time()) - 30
    hangup = frames("CHANNEL_HANGUP_COMPLETE").replace(
        f"Event-Date-Timestamp: {T + 99_000_000}".encode(),
        f"Event-Date-Timestamp: {(created + 99) * 1_000_000}".encode())
    assert hangup != frames("CHANNEL_HANGUP_COMPLETE")
    fake = FakeEsl(hangup, channels=[[{**A_ROW, "created_epoch": str(created)}, B_ROW]])
    messages = await run_until_recorded(fake, tmp_path)
    record = messages[-1]
    assert record.call is not None and record.sender.name == "李雷"
    assert (record.call.state, record.call.agent, record.call.end_reason) == (
        "completed", "1001", "NORMAL_CLEARING")
    assert record.call.started_at == datetime.fromtimestamp(created, UTC)
    assert record.call.answered_at is not None and record.call.answered_at > record.call.started_at
    assert record.call.from_ == "+8613800138000"


async def test_a_call_open_in_the_journal_at_a_restart_ends_when_the_pbx_no_longer_lists_it(
        tmp_path: Path) -> None:
    ringing = EslCalls(line(8021)).translate(parse_headers(
        frames("CHANNEL_CREATE").split(b"\n\n", 1)[1].split(b"Content-Length")[0],
        decode=True))
    fake = FakeEsl(b"", channels=[[]])
    record = (await run_until_recorded(fake, tmp_path, before=ringing))[-1]
    assert record.call is not None
    assert (record.call.state, record.call.end_reason) == ("missed", "gone_after_reconnect")
    assert "callback" in record.flags


def test_show_channels_without_rows_and_an_error_answer_are_told_apart() -> None:
    assert channel_rows(b'{"row_count":0}') == []
    assert channel_rows(b"-ERR no reply\n") is None
    assert channel_rows(json.dumps({"row_count": 1, "rows": [A_ROW]}).encode()) == [A_ROW]
