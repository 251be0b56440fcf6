"""The FreeSWITCH event socket client against a TCP fake, events split at random."""

from __future__ import annotations

import asyncio
from pathlib import Path

from connectors.telephony.inbound.esl import EslClient
from connectors.telephony.settings import EslLine
from connectors.telephony.state import TelephonyState
from intake import StateStore
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
