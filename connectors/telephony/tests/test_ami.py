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
    await _run_until_recorded(fake, state, client, publisher)
    record = publisher.messages[-1]
    assert record.call is not None
    assert (record.call.call_id, record.call.direction, record.call.state,
            record.call.end_reason) == ("1796527800.1", "inbound", "missed",
                                        "gone_after_reconnect")


def _row(channel: str, uniqueid: str, linkedid: str, *, state: str = "Up", bridge: str = "",
         number: str = "", connected: str = "", context: str = "from-internal",
         duration: str = "00:00:30", application: str = "AppDial") -> dict[str, str]:
    """One `CoreShowChannel` event's fields, as Asterisk 13+ lists a channel."""
    return {"Channel": channel, "ChannelState": {"Up": "6", "Ringing": "5"}[state],
            "ChannelStateDesc": state, "CallerIDNum": number, "CallerIDName": "<unknown>",
            "ConnectedLineNum": connected, "ConnectedLineName": "<unknown>",
            "Language": "en", "AccountCode": "", "Context": context, "Exten": "4008001234",
            "Priority": "1", "Uniqueid": uniqueid, "Linkedid": linkedid,
            "Application": application, "ApplicationData": "", "Duration": duration,
            "BridgeId": bridge}


CUSTOMER = "013800138000"


def test_the_listing_adopts_calls_with_the_agents_bridged_to_their_callers() -> None:
    """A connector that knows no call (restarted, or the calls began while the link was
    down) adopts each listed inbound call and, for each, the agent leg up and bridged to its
    caller: in the caller's bridge, through a Local channel pair (connected to the caller's
    number), or in the caller's bridge under another Linkedid. A ringing agent leg, an IVR
    leg and an internal call answer nothing."""
    now = 1796528100.0
    calls = AmiCalls(line(), clock=lambda: now)

    def caller(linked: str, bridge: str = "", **kw: str) -> dict[str, str]:
        return _row(f"PJSIP/trunk-{linked}", linked, linked, bridge=bridge, number=CUSTOMER,
                    context="from-pstn", **kw)

    rows = [
        # the agent's channel listed before its caller's: the listing is reconciled whole
        _row("PJSIP/1001-00000002", "a.2", "a.1", bridge="b-a", number="1001",
             connected=CUSTOMER, duration="00:01:04"),
        caller("a.1", "b-a", duration="00:01:05", connected="1001"),
        caller("b.1", "b-b1", duration="00:00:40"),
        _row("Local/1005@agents-00000001;1", "b.2", "b.1", bridge="b-b1", number="1005"),
        _row("Local/1005@agents-00000001;2", "b.3", "b.1", bridge="b-b2", number="1005"),
        _row("PJSIP/1005-00000004", "b.4", "b.1", bridge="b-b2", number="1005",
             connected=CUSTOMER),
        _row("PJSIP/1007-00000005", "b.5", "b.1", state="Ringing", number="1007"),
        caller("c.1", application="BackGround"),  # the IVR answered: no agent yet
        caller("f.1", "b-f", duration="00:02:00"),
        _row("PJSIP/1009-00000007", "g.2", "g.1", bridge="b-f", number="1009"),
        _row("PJSIP/1003-00000008", "d.1", "d.1", bridge="b-d", number="1003"),
        _row("PJSIP/1004-00000009", "d.2", "d.1", bridge="b-d", number="1004",
             connected="1003"),
    ]
    events = calls.reconcile(rows)
    assert sorted((e.call_id, e.type, e.agent) for e in events) == [
        ("a.1", "answered", "1001"), ("a.1", "ringing", None),
        ("b.1", "answered", "1005"), ("b.1", "ringing", None), ("c.1", "ringing", None),
        ("f.1", "answered", "1009"), ("f.1", "ringing", None)]
    ringing = next(e for e in events if e.call_id == "a.1" and e.type == "ringing")
    assert ringing.occurred_at.timestamp() == now - 65  # started `Duration` ago
    assert ringing.from_raw == CUSTOMER
    answered = next(e for e in events if e.call_id == "a.1" and e.type == "answered")
    assert answered.occurred_at.timestamp() == now  # the listing has no answer time
    # Listed again after the next reconnect: nothing new; the agent's leg gone changes
    # nothing either, only the caller's channel ends a call.
    assert calls.reconcile(rows) == []
    assert calls.reconcile([r for r in rows if r["Uniqueid"] != "a.2"]) == []
    assert [(e.call_id, e.type) for e in calls.reconcile(rows[1:])] == []
    assert [(e.call_id, e.cause) for e in calls.reconcile(rows[2:])] == [
        ("a.1", "gone_after_reconnect")]


async def _run_until_recorded(fake: FakeAmi, state: TelephonyState, client: AmiClient,
                              publisher: RecordingPublisher) -> None:
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


LISTED_ANSWERED = [
    _row("PJSIP/trunk-00000001", "1796527800.1", "1796527800.1", bridge="br-1",
         number=CUSTOMER, connected="1001", context="from-pstn", application="Queue"),
    _row("PJSIP/1001-00000002", "1796527801.2", "1796527800.1", bridge="br-1",
         number="1001", connected=CUSTOMER, application="AppQueue")]


@pytest.mark.parametrize("restarted", [False, True])
async def test_an_agent_who_answered_while_the_link_was_down_is_adopted(
        tmp_path: Path, restarted: bool) -> None:
    """The link drops while the agent's phone rings; the agent answers meanwhile, so no
    DialEnd reaches the connector. The listing after the reconnect shows the agent's channel
    up in the caller's bridge: the call is answered by 1001, one leg, talk time counted.
    Restarted: the connector was killed instead and its journal already had the answer: the
    adopted answer is the same leg, answered when the journal says."""
    whole = transcript("ami_queue_call_mixmonitor.txt")
    before, _ = _split(whole, b"Event: DialEnd")
    _, hangups = _split(whole, b"Event: Hangup")
    fake = FakeAmi([b"" if restarted else before, hangups], channels=[[], LISTED_ANSWERED])
    await fake.start()
    publisher = RecordingPublisher()
    ami = line(fake.port)
    state = TelephonyState([ami], StateStore(f"sqlite+aiosqlite:///{tmp_path / 's.sqlite3'}"),
                           publisher)
    await state.open()
    if restarted:
        upto_answer, _ = _split(whole, b"Event: VarSet")
        journaled = AmiCalls(ami)
        await state.accept_all(ami.id, [
            event for raw in upto_answer.split(b"\r\n\r\n") if raw
            for event in journaled.translate(parse_message(raw))])
        fake.sessions, fake.channels = [hangups], [LISTED_ANSWERED]
    client = AmiClient(ami, lambda events: state.accept_all(ami.id, events),
                       lambda: state.open_calls(ami.id))
    client.calls.clock = lambda: 1796527850.0  # the listing arrives 40 s after the answer
    await _run_until_recorded(fake, state, client, publisher)
    keys = [m.idempotency_key.rsplit(":", 1)[1] for m in publisher.messages]
    assert keys == ["ringing", "answered", "ended", "record"]
    record = publisher.messages[-1].call
    assert record is not None
    assert (record.state, record.agent, [leg.agent for leg in record.legs]) == (
        "completed", "1001", ["1001"])
    assert record.end_reason == "Normal Clearing"
    assert record.answered_at is not None
    answered_at = 1796527810.0 if restarted else 1796527850.0  # else the time of receipt
    assert record.answered_at.timestamp() == answered_at
    assert record.talk_s == 1796527900 - answered_at
