"""Live fake PBXs for the telephony chaos run: an Asterisk AMI and a FreeSWITCH event socket
whose calls go on whatever happens to the connector's link (tests/chaos/telephony.py).

Each is a TCP server speaking its protocol as documented (the AMI banner, `Action: Login`,
`CoreShowChannels` listing every channel with `BridgeId`, `ConnectedLineNum` and `Duration`,
`Event: Cdr` after each hangup; ESL's `auth/request`, `event plain`, `api show channels as
json` with `callstate`, `call_uuid` and `created_epoch`, `Content-Length` framed plain events).
Calls are played on their own clock: an event happening while no client is logged in is lost,
as on a real PBX. `drop(down_s)` cuts the link and refuses connections for a while; a SIGKILLed
connector drops it too. What a connector could have known of each call is kept (the sessions,
when each began and ended), so that the check can say which end each record must show.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import urllib.parse
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

REPO_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "intake.example.yaml"
AMI_SECRET = "ami-test-secret"  # the example config's test values
ESL_PASSWORD = "ClueCon-test-esl"
# A session must have lasted this long after an event for the event to count as seen: the
# connector journals each event within milliseconds, a SIGKILL can land in between, and on a
# loaded machine its reads can lag the socket by several seconds (`make test` runs this beside
# two workers of the rest: a lag past 2.5 s was seen there).
SEEN_MARGIN_S = 5.0
# The example config's `asterisk-lab` line: cdr_manager writes times in the PBX's local time.
AMI_ZONE = zoneinfo.ZoneInfo("Asia/Shanghai")


def _cdr_time(at: float | None) -> str:
    return "" if at is None else datetime.fromtimestamp(at, AMI_ZONE).strftime(
        "%Y-%m-%d %H:%M:%S")


@dataclass
class PbxCall:
    """One call's timeline (wall clock)."""

    index: int
    call_id: str
    agent_leg: str
    caller: str
    agent: str
    ringing_at: float
    answered_at: float | None  # None: the caller hung up unanswered (missed)
    ended_at: float
    played: list[str] = field(default_factory=list)  # steps done: ring, answer, end


@dataclass
class Session:
    began: float
    ended: float | None = None
    listed_at: float | None = None
    writer: asyncio.StreamWriter | None = None

    def saw(self, at: float) -> bool:
        """Whether an event sent at `at` was surely journaled by the connector."""
        return self.began <= at and (self.ended is None or self.ended >= at + SEEN_MARGIN_S)


class LivePbx:
    """The call clock and the sessions; subclasses speak AMI or ESL."""

    kind = ""
    line = ""  # the example config's line for this PBX
    cause = ""  # what its hangups give as the end reason
    example_port = 0

    def __init__(self, run_id: str, *, seed: int) -> None:
        self.run_id = run_id
        self.random = random.Random(seed)
        self.calls: list[PbxCall] = []
        self.sessions: list[Session] = []
        self.port = 0
        self.refusing_until = 0.0
        self.drops = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.drop(0)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def drop(self, down_s: float) -> None:
        """Cut every link now, and refuse connections for `down_s`."""
        self.refusing_until = time.time() + down_s
        for session in self.live():
            self._close(session)
        self.drops += 1

    def live(self) -> list[Session]:
        return [s for s in self.sessions if s.ended is None and s.writer is not None]

    def _close(self, session: Session) -> None:
        if session.ended is None:
            session.ended = time.time()
        if session.writer is not None:
            session.writer.close()

    def broadcast(self, data: bytes) -> None:
        for session in self.live():
            if session.writer is not None and not session.writer.is_closing():
                session.writer.write(data)

    async def play(self, count: int, every_s: float) -> None:
        """Start `count` calls, one every `every_s`; returns once all have ended."""
        for index in range(count):
            now = time.time()
            ring = self.random.uniform(0.5, 2.5)
            answered = self.random.random() < 0.75
            talk = self.random.uniform(1.0, 5.0)
            call = PbxCall(index=index, call_id=f"{self.run_id}-{self.kind}-{index}",
                           agent_leg=f"{self.run_id}-{self.kind}-{index}-b",
                           caller=f"{136 if self.kind == 'esl' else 137}{index:08d}",
                           agent=str(1001 + index % 5), ringing_at=now,
                           answered_at=now + ring if answered else None,
                           ended_at=now + ring + (talk if answered else 0.0))
            self.calls.append(call)
            task = asyncio.create_task(self._live(call))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(every_s)
        if self._tasks:
            await asyncio.wait(list(self._tasks))

    async def _live(self, call: PbxCall) -> None:
        self.broadcast(self.ringing(call))
        call.played.append("ring")
        if call.answered_at is not None:
            await asyncio.sleep(max(0.0, call.answered_at - time.time()))
            self.broadcast(self.answer(call))
            call.played.append("answer")
        await asyncio.sleep(max(0.0, call.ended_at - time.time()))
        self.broadcast(self.hangup(call))
        call.played.append("end")

    def live_calls(self, at: float) -> list[PbxCall]:
        return [c for c in self.calls if c.ringing_at <= at and "end" not in c.played]

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        if time.time() < self.refusing_until:
            writer.close()  # the PBX is unreachable: the link ends at once
            return
        session = Session(began=time.time())
        try:
            if await self.login(reader, writer):
                self.sessions.append(session)
                session.writer = writer
                await self.serve(reader, writer, session)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._close(session)

    # What a record must show: the check in telephony.py asks these.

    def answer_seen(self, call: PbxCall) -> bool:
        """The connector surely knew of the answer: its event reached a session that lived on,
        or a listing showed the agent's leg up."""
        if call.answered_at is None:
            return False
        return any(s.saw(call.answered_at) or (
            s.listed_at is not None and call.answered_at <= s.listed_at < call.ended_at
            and s.saw(s.listed_at)) for s in self.sessions)

    def call_seen(self, call: PbxCall) -> bool:
        """The connector surely knew of the call: its ringing reached a session that lived on,
        or a listing showed it. A call wholly inside an outage is invisible (a PBX keeps no
        events for a client that is not there)."""
        return any(s.saw(call.ringing_at) or (
            s.listed_at is not None and call.ringing_at <= s.listed_at < call.ended_at
            and s.saw(s.listed_at)) for s in self.sessions)

    def end_seen(self, call: PbxCall) -> bool:
        return any(s.saw(call.ended_at) for s in self.sessions)

    # Per protocol.

    async def login(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        raise NotImplementedError

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    session: Session) -> None:
        raise NotImplementedError

    def ringing(self, call: PbxCall) -> bytes:
        raise NotImplementedError

    def answer(self, call: PbxCall) -> bytes:
        raise NotImplementedError

    def hangup(self, call: PbxCall) -> bytes:
        raise NotImplementedError


def pbx_config(example: str, pbxs: list[LivePbx]) -> str:
    """The example config with its AMI and ESL lines pointed at the live fakes."""
    for pbx in pbxs:
        old = f"port: {pbx.example_port}\n"
        assert example.count(old) == 1, old
        example = example.replace(old, f"port: {pbx.port}\n")
    return example


async def wait_for_records(pbxs: list[LivePbx], database_url: str,
                           timeout_s: float = 30.0) -> int:
    """Wait until every call the PBXs played that a connector could know of has its record
    stored (or `timeout_s`); returns how many records of the PBXs' calls are stored."""
    keys = {f"telephony:{pbx.line}:{call.call_id}:record" for pbx in pbxs for call in pbx.calls}
    awaited = {f"telephony:{pbx.line}:{call.call_id}:record" for pbx in pbxs
               for call in pbx.calls if pbx.call_seen(call)}
    engine = create_async_engine(database_url)
    stored = 0
    try:
        deadline = time.monotonic() + timeout_s
        while keys and time.monotonic() < deadline:
            async with engine.connect() as conn:
                rows = await conn.execute(text(
                    "SELECT idempotency_key FROM messages WHERE idempotency_key LIKE :like"),
                    {"like": "telephony:%"})
                present = {str(r[0]) for r in rows}
            stored = len(keys & present)
            if awaited <= present:
                break
            await asyncio.sleep(0.5)
    finally:
        await engine.dispose()
    return stored


def _ami(**fields: str) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode() + b"\r\n"


def _ami_parse(raw: bytes) -> dict[str, str]:
    return {k: v for k, _, v in (line.partition(": ")
                                 for line in raw.decode().split("\r\n")) if k}


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


class LiveAmi(LivePbx):
    """Asterisk's manager interface (`manager.conf` `timestampevents = yes`, cdr_manager on,
    the PBX in Asia/Shanghai)."""

    kind = "ami"
    line = "asterisk-lab"
    cause = "Normal Clearing"
    example_port = 15038

    def trunk(self, call: PbxCall) -> str:
        return f"PJSIP/trunk-{call.index:08x}"

    def phone(self, call: PbxCall) -> str:
        return f"PJSIP/{call.agent}-{call.index:08x}"

    async def login(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"Asterisk Call Manager/5.0.1\r\n")
        login = _ami_parse((await reader.readuntil(b"\r\n\r\n"))[:-4])
        ok = login.get("Action") == "Login" and login.get("Secret") == AMI_SECRET
        writer.write(_ami(Response="Success" if ok else "Error",
                          ActionID=login.get("ActionID", ""),
                          Message="Authentication accepted" if ok
                          else "Authentication failed"))
        return ok

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    session: Session) -> None:
        while True:
            action = _ami_parse((await reader.readuntil(b"\r\n\r\n"))[:-4])
            action_id = action.get("ActionID", "")
            if action.get("Action") == "Ping":
                writer.write(_ami(Response="Success", ActionID=action_id, Ping="Pong",
                                  Timestamp=f"{time.time():.6f}"))
            elif action.get("Action") == "CoreShowChannels":
                session.listed_at = time.time()
                rows = [row for call in self.live_calls(session.listed_at)
                        for row in self.channels(call, session.listed_at)]
                out = _ami(Response="Success", ActionID=action_id, EventList="start",
                           Message="Channels will follow")
                out += b"".join(_ami(Event="CoreShowChannel", ActionID=action_id, **row)
                                for row in rows)
                out += _ami(Event="CoreShowChannelsComplete", ActionID=action_id,
                            EventList="Complete", ListItems=str(len(rows)))
                writer.write(out)
            await writer.drain()

    def channels(self, call: PbxCall, now: float) -> list[dict[str, str]]:
        up = call.answered_at is not None and call.answered_at <= now
        bridge = f"bridge-{call.call_id}" if up else ""
        common = {"Language": "en", "AccountCode": "", "Priority": "1",
                  "Linkedid": call.call_id}
        rows = [{"Channel": self.trunk(call), "ChannelState": "6", "ChannelStateDesc": "Up",
                 "CallerIDNum": call.caller, "CallerIDName": "<unknown>",
                 "ConnectedLineNum": call.agent if up else "", "ConnectedLineName": "",
                 "Context": "from-pstn", "Exten": "4008001234", "Uniqueid": call.call_id,
                 "Application": "Queue", "ApplicationData": "support",
                 "Duration": _hms(now - call.ringing_at), "BridgeId": bridge, **common},
                {"Channel": self.phone(call), "ChannelState": "6" if up else "5",
                 "ChannelStateDesc": "Up" if up else "Ringing", "CallerIDNum": call.agent,
                 "CallerIDName": "<unknown>", "ConnectedLineNum": call.caller,
                 "ConnectedLineName": "<unknown>", "Context": "from-internal",
                 "Exten": call.agent, "Uniqueid": call.agent_leg, "Application": "AppQueue",
                 "ApplicationData": "", "Duration": _hms(now - call.ringing_at - 0.2),
                 "BridgeId": bridge, **common}]
        return rows

    def _ids(self, call: PbxCall, at: float) -> dict[str, str]:
        return {"Timestamp": f"{at:.6f}", "Linkedid": call.call_id}

    def ringing(self, call: PbxCall) -> bytes:
        at = call.ringing_at
        return (_ami(Event="Newchannel", Privilege="call,all", Channel=self.trunk(call),
                     ChannelState="0", CallerIDNum=call.caller, CallerIDName="<unknown>",
                     Context="from-pstn", Exten="4008001234", Uniqueid=call.call_id,
                     **self._ids(call, at))
                + _ami(Event="Newchannel", Privilege="call,all", Channel=self.phone(call),
                       ChannelState="0", Context="from-internal", Exten=call.agent,
                       Uniqueid=call.agent_leg, **self._ids(call, at))
                + _ami(Event="DialBegin", Privilege="call,all", Channel=self.trunk(call),
                       DestChannel=self.phone(call), Uniqueid=call.call_id,
                       DestLinkedid=call.call_id, **self._ids(call, at)))

    def answer(self, call: PbxCall) -> bytes:
        assert call.answered_at is not None
        return _ami(Event="DialEnd", Privilege="call,all", Channel=self.trunk(call),
                    DestChannel=self.phone(call), DialStatus="ANSWER", Uniqueid=call.call_id,
                    **self._ids(call, call.answered_at))

    def hangup(self, call: PbxCall) -> bytes:
        at = call.ended_at
        answered = call.answered_at is not None
        return (_ami(Event="Hangup", Privilege="call,all", Channel=self.phone(call),
                     Uniqueid=call.agent_leg, Cause="16", **{"Cause-txt": "Normal Clearing"},
                     **self._ids(call, at))
                + _ami(Event="Hangup", Privilege="call,all", Channel=self.trunk(call),
                       Uniqueid=call.call_id, Cause="16",
                       **{"Cause-txt": "Normal Clearing"}, **self._ids(call, at))
                + _ami(Event="Cdr", Privilege="cdr,all", Timestamp=f"{at:.6f}",
                       AccountCode="", Source=call.caller, Destination="4008001234",
                       DestinationContext="from-pstn", CallerID=f'"" <{call.caller}>',
                       Channel=self.trunk(call), DestinationChannel=self.phone(call),
                       LastApplication="Queue", LastData="support",
                       StartTime=_cdr_time(call.ringing_at),
                       AnswerTime=_cdr_time(call.answered_at), EndTime=_cdr_time(at),
                       Duration=str(int(at - call.ringing_at)),
                       BillableSeconds=str(int(at - call.answered_at))
                       if call.answered_at is not None else "0",
                       Disposition="ANSWERED" if answered else "NO ANSWER",
                       AMAFlags="DOCUMENTATION", UniqueID=call.call_id, UserField=""))


def _esl_event(**fields: str) -> bytes:
    body = "".join(f"{k}: {urllib.parse.quote(v)}\n" for k, v in fields.items()).encode()
    return f"Content-Length: {len(body)}\nContent-Type: text/event-plain\n\n".encode() + body


class LiveEsl(LivePbx):
    """FreeSWITCH's event socket, inbound mode."""

    kind = "esl"
    line = "freeswitch-lab"
    cause = "NORMAL_CLEARING"
    example_port = 18021

    async def login(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"Content-Type: auth/request\n\n")
        command = (await reader.readuntil(b"\n\n")).decode().strip()
        if command != f"auth {ESL_PASSWORD}":
            writer.write(b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n"
                         b"Content-Type: text/disconnect-notice\nContent-Length: 0\n\n")
            return False
        writer.write(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n")
        return True

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    session: Session) -> None:
        while True:
            command = (await reader.readuntil(b"\n\n")).decode().strip()
            if command.startswith("event plain"):
                writer.write(b"Content-Type: command/reply\n"
                             b"Reply-Text: +OK event listener enabled plain\n\n")
            elif command == "api show channels as json":
                session.listed_at = time.time()
                rows = [row for call in self.live_calls(session.listed_at)
                        for row in self.rows(call, session.listed_at)]
                listing: dict[str, object] = {"row_count": len(rows)}
                if rows:
                    listing["rows"] = rows
                body = json.dumps(listing).encode()
                writer.write(f"Content-Type: api/response\nContent-Length: {len(body)}\n\n"
                             .encode() + body)
            await writer.drain()

    def rows(self, call: PbxCall, now: float) -> list[dict[str, str]]:
        up = call.answered_at is not None and call.answered_at <= now
        created = str(int(call.ringing_at))
        return [{"uuid": call.call_id, "direction": "inbound", "created_epoch": created,
                 "name": f"sofia/external/{call.caller}@10.0.0.1", "state": "CS_EXECUTE",
                 "cid_name": "", "cid_num": call.caller, "dest": "4008001234",
                 "context": "public", "callstate": "ACTIVE", "call_uuid": call.call_id},
                {"uuid": call.agent_leg, "direction": "outbound", "created_epoch": created,
                 "name": f"sofia/internal/{call.agent}@10.0.0.5", "state": "CS_EXCHANGE_MEDIA",
                 "cid_name": "", "cid_num": call.caller, "dest": call.agent,
                 "context": "default", "callstate": "ACTIVE" if up else "RINGING",
                 "call_uuid": call.call_id}]

    def _at(self, at: float) -> str:
        return str(int(at * 1_000_000))

    def ringing(self, call: PbxCall) -> bytes:
        at = self._at(call.ringing_at)
        return (_esl_event(**{"Event-Name": "CHANNEL_CREATE", "Unique-ID": call.call_id,
                              "Call-Direction": "inbound", "Caller-Context": "public",
                              "Channel-Name": f"sofia/external/{call.caller}@10.0.0.1",
                              "Caller-Caller-ID-Number": call.caller,
                              "Caller-Caller-ID-Name": "_undef_",
                              "Caller-Destination-Number": "4008001234",
                              "Event-Date-Timestamp": at})
                + _esl_event(**{"Event-Name": "CHANNEL_CREATE", "Unique-ID": call.agent_leg,
                                "Call-Direction": "outbound", "Caller-Context": "default",
                                "Channel-Name": f"sofia/internal/{call.agent}@10.0.0.5",
                                "Other-Leg-Unique-ID": call.call_id,
                                "Channel-Call-UUID": call.call_id,
                                "Event-Date-Timestamp": at}))

    def answer(self, call: PbxCall) -> bytes:
        assert call.answered_at is not None
        return _esl_event(**{"Event-Name": "CHANNEL_ANSWER", "Unique-ID": call.agent_leg,
                             "Call-Direction": "outbound",
                             "Channel-Name": f"sofia/internal/{call.agent}@10.0.0.5",
                             "Other-Leg-Unique-ID": call.call_id,
                             "Channel-Call-UUID": call.call_id,
                             "Event-Date-Timestamp": self._at(call.answered_at)})

    def hangup(self, call: PbxCall) -> bytes:
        at = self._at(call.ended_at)
        billed = int(call.ended_at - call.answered_at) if call.answered_at else 0
        return (_esl_event(**{"Event-Name": "CHANNEL_HANGUP_COMPLETE",
                              "Unique-ID": call.agent_leg, "Call-Direction": "outbound",
                              "Channel-Name": f"sofia/internal/{call.agent}@10.0.0.5",
                              "Other-Leg-Unique-ID": call.call_id,
                              "Hangup-Cause": "NORMAL_CLEARING", "Event-Date-Timestamp": at})
                + _esl_event(**{"Event-Name": "CHANNEL_HANGUP_COMPLETE",
                                "Unique-ID": call.call_id, "Call-Direction": "inbound",
                                "Caller-Context": "public",
                                "Hangup-Cause": "NORMAL_CLEARING",
                                "variable_duration": str(int(call.ended_at - call.ringing_at)),
                                "variable_billsec": str(billed),
                                "Event-Date-Timestamp": at}))
