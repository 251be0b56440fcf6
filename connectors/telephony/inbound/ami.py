"""Adapter 3: an Asterisk AMI client (one per `asterisk_ami` line), on asyncio streams.

The client connects out, reads the `Asterisk Call Manager/x.y.z` banner, logs in
(`Events: call,cdr,agent,dialplan`) and turns the events of each call into the connector's
normalised call events. Messages are `Key: Value` lines ending in CRLF with a blank line
between messages; a TCP read may end inside a UTF-8 character or between CR and LF, so bytes
are buffered and only whole messages decoded (panoramisk 1.4 decodes each read alone and drops
a split character). A refused login or a lost link is retried with exponential backoff and
jitter (0.5 s doubling to 60 s); `Action: Ping` every 20 s, no answer in 10 s: reconnect.

Calls: the call id is the `Linkedid`; its first channel in an `inbound_contexts` context
makes an inbound call from its `CallerIDNum`. Only an agent channel (`agent_channel`)
answering (`DialEnd` `ANSWER`, `AgentConnect`) is an answer, not the trunk going `Up` for an
IVR. A call whose first channel is an agent's and that dials another agent is internal: it
publishes nothing. After each (re)connect the `CoreShowChannels` listing is reconciled whole
(calls ended meanwhile, calls and bridged agent legs adopted); cdr_manager's `Cdr` events
confirm the PBX's durations and complete what the link lost (`AmiCalls._cdr`).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import time
import zoneinfo
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath

from intake import get_logger

from ..normalize import GONE_AFTER_RECONNECT, CallEvent
from ..settings import AmiLine
from .runtime import RECONNECTS

log = get_logger(service="telephony", component="ami")

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 60.0
PING_EVERY_S = 20.0
PING_TIMEOUT_S = 10.0
MAX_MESSAGE_BYTES = 64 * 1024
# Ended calls whose `Cdr` may still come (cdr.conf `batch = yes` posts them minutes later).
ENDED_KEPT = 10_000

Accept = Callable[[list[CallEvent]], Awaitable[object]]


class LoginRefused(Exception):
    pass


def parse_message(raw: bytes) -> dict[str, str]:
    """One AMI message (without its blank line) as a dict; UTF-8, undecodable bytes replaced."""
    fields: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def message_bytes(**fields: str) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in fields.items()).encode() + b"\r\n"


@dataclass
class AmiCall:
    call_id: str
    inbound: bool
    internal: bool = False
    agents: list[str] = field(default_factory=list)
    answered_by: list[str] = field(default_factory=list)


class AmiCalls:
    """Turns a line's AMI events into call events; pure apart from the time of receipt."""

    def __init__(self, line: AmiLine, clock: Callable[[], float] = time.time) -> None:
        self.line = line
        self.agent = re.compile(line.agent_channel)
        self.clock = clock
        self.calls: dict[str, AmiCall] = {}
        self.ended: OrderedDict[str, AmiCall] = OrderedDict()
        self.zone = zoneinfo.ZoneInfo(line.timezone)

    def agent_of(self, channel: str | None) -> str | None:
        match = self.agent.search(channel or "")
        return match.group("agent") if match else None

    def _at(self, fields: dict[str, str]) -> datetime:
        try:
            return datetime.fromtimestamp(float(fields["Timestamp"]), UTC)
        except (KeyError, ValueError):
            return datetime.fromtimestamp(self.clock(), UTC)

    def _event(self, kind: str, call: AmiCall, fields: dict[str, str],
               **extra: object) -> CallEvent:
        return CallEvent.model_validate({
            "line": self.line.id, "call_id": call.call_id, "type": kind,
            "occurred_at": self._at(fields), "adapter": "asterisk_ami",
            "direction": "inbound" if call.inbound else "outbound", **extra})

    def _close(self, linked: str) -> AmiCall:
        call = self.ended[linked] = self.calls.pop(linked)
        while len(self.ended) > ENDED_KEPT:
            self.ended.popitem(last=False)
        return call

    def _cdr(self, fields: dict[str, str]) -> list[CallEvent]:
        """cdr_manager's record of a call (one per party dialled): its end (`EndTime`, the
        PBX's local time), `Duration`, `BillableSeconds` when an agent answered (the answer was
        `EndTime` less those) and `Disposition`. Only a call this client knows (live or ended
        lately) is confirmed: an internal call's, or one older than a restart, is dropped."""
        linked = fields.get("LinkedID") or fields.get("Linkedid") or fields.get("UniqueID", "")
        call = self.calls.get(linked) or self.ended.get(linked)
        if call is None or call.internal:
            return []
        agent = self.agent_of(fields.get("DestinationChannel" if call.inbound else "Channel"))
        answered = fields.get("Disposition") == "ANSWERED" and agent is not None
        try:
            ended = datetime.strptime(fields.get("EndTime", ""), "%Y-%m-%d %H:%M:%S")
            at = {"Timestamp": str(ended.replace(tzinfo=self.zone).timestamp())}
        except ValueError:
            at = fields
        return [self._event("cdr", call, at, agent=agent,
                            duration_s=_seconds(fields.get("Duration")),
                            talk_s=_seconds(fields.get("BillableSeconds")) if answered else None,
                            cause=fields.get("Disposition") or None)]

    def translate(self, fields: dict[str, str]) -> list[CallEvent]:
        name = fields.get("Event")
        if name == "Cdr":
            return self._cdr(fields)
        linked = fields.get("Linkedid") or fields.get("DestLinkedid") or ""
        if name == "Newchannel":
            if fields.get("Uniqueid") != linked or linked in self.calls:
                return []
            inbound = fields.get("Context") in self.line.inbound_contexts
            caller_agent = self.agent_of(fields.get("Channel"))
            if not inbound and caller_agent is None:
                return []
            new = self.calls[linked] = AmiCall(linked, inbound)
            if not inbound:
                return []  # an agent dialling: outbound or internal, known at DialBegin
            return [self._event("ringing", new, fields, from_raw=fields.get("CallerIDNum"),
                                to_raw=fields.get("Exten"),
                                caller_name=fields.get("CallerIDName"))]
        call = self.calls.get(linked)
        if call is None or call.internal:
            if name == "Hangup" and call is not None and fields.get("Uniqueid") == linked:
                del self.calls[linked]
            return []
        if name in ("DialBegin", "AgentCalled"):
            agent = self.agent_of(fields.get("DestChannel") or fields.get("Interface"))
            if not call.inbound:
                if agent is not None:
                    call.internal = True  # agent to agent: no pop, no ticket
                    return []
                return [self._event("ringing", call, fields,
                                    agent=self.agent_of(fields.get("Channel")),
                                    to_raw=fields.get("DestCallerIDNum")
                                    or fields.get("DialString"),
                                    from_raw=fields.get("CallerIDNum"))]
            if agent is None or agent in call.agents:
                return []
            call.agents.append(agent)
            return [self._event("ringing", call, fields, agents=[agent])]
        if name in ("DialEnd", "AgentConnect"):
            if name == "DialEnd" and fields.get("DialStatus") != "ANSWER":
                return []
            agent = self.agent_of(fields.get("DestChannel") or fields.get("Interface"))
            if not call.inbound:
                return [self._event("answered", call, fields,
                                    agent=self.agent_of(fields.get("Channel")))]
            if agent is None or agent in call.answered_by:
                return []
            kind = "transferred" if call.answered_by else "answered"
            call.answered_by.append(agent)
            return [self._event(kind, call, fields, agent=agent)]
        if name == "NewExten" and fields.get("Application") == "VoiceMail" \
                and fields.get("Uniqueid") == linked and call.inbound:
            return [self._event("voicemail", call, fields)]
        if name == "VarSet" and fields.get("Variable") == "MIXMONITOR_FILENAME" \
                and self.line.recording_url:
            path = fields.get("Value", "")
            url = self.line.recording_url.format(basename=PurePosixPath(path).name, path=path)
            return [self._event("recording", call, fields, recording_url=url)]
        if name == "Hangup" and fields.get("Uniqueid") == linked:
            self._close(linked)
            return [self._event("ended", call, fields, cause=fields.get("Cause-txt"))]
        return []


    def reconcile(self, rows: list[dict[str, str]], open_calls: Iterable[str] = ()
                  ) -> list[CallEvent]:
        """After a (re)connect, the `CoreShowChannel` rows (every channel the PBX has) against
        what is known. A call (known here, or open in the journal: `open_calls`, after a
        connector restart this client knows none) whose first channel is not listed ended
        while the link was down: it ends now (its end carries no direction when only the
        journal knows it). A listed first channel not known is adopted (its ringing, started
        `Duration` ago), and a listed agent leg up and bridged to a known inbound call answers
        it (the answer time is the time of receipt: the listing has none)."""
        # A call lives while its first channel does (its Hangup ends it, as in translate()).
        firsts = {row["Linkedid"]: row for row in rows
                  if row.get("Linkedid") and row.get("Uniqueid") == row["Linkedid"]}
        listed = set(firsts)
        events: list[CallEvent] = []
        for linked in [c for c in self.calls if c not in listed]:
            call = self._close(linked)
            if not call.internal:
                events.append(self._event("ended", call, {}, cause=GONE_AFTER_RECONNECT))
        for linked in open_calls:
            if linked not in listed and linked not in self.calls:
                # Its Cdr may still come: known as ended (its direction the journal's).
                self.ended[linked] = AmiCall(linked, inbound=True)
                events.append(self._event("ended", AmiCall(linked, inbound=True), {},
                                          cause=GONE_AFTER_RECONNECT,
                                          direction=None))
        for linked, row in firsts.items():
            if linked not in self.calls:
                fields = {**row, "Event": "Newchannel"}
                fields.pop("Timestamp", None)
                age = _listed_age(row.get("Duration"))
                if age is not None:
                    fields["Timestamp"] = str(self.clock() - age)
                events += self.translate(fields)
        bridged = {row["BridgeId"]: row["Linkedid"] for row in firsts.values()
                   if row.get("BridgeId")}
        # Oldest channels first: after a transfer the first agent answered before the next.
        for row in sorted(rows, key=lambda r: -(_listed_age(r.get("Duration")) or 0)):
            answering = self._bridged_call(row, firsts, bridged)
            if answering is not None:
                events += self.translate({"Event": "AgentConnect", "Linkedid": answering,
                                          "DestChannel": row.get("Channel", "")})
        return events

    def _bridged_call(self, row: dict[str, str], firsts: dict[str, dict[str, str]],
                      bridged: dict[str, str]) -> str | None:
        """The known inbound call whose caller `row`, an agent's channel, talks to: up, in a
        bridge, and either in the caller's bridge or connected to the caller's number (through
        a Local channel pair the agent's bridge is not the caller's); its call is its
        `Linkedid`, else the call of the caller in its bridge."""
        bridge = row.get("BridgeId", "")
        up = row.get("ChannelState") == "6" or row.get("ChannelStateDesc") == "Up"
        if not bridge or not up or row.get("Uniqueid") == row.get("Linkedid") \
                or self.agent_of(row.get("Channel")) is None:
            return None
        linked = row.get("Linkedid", "")
        if linked not in self.calls:
            linked = bridged.get(bridge, "")
        call, caller = self.calls.get(linked), firsts.get(linked)
        if call is None or not call.inbound or call.internal or caller is None:
            return None
        if bridge == caller.get("BridgeId") or (
                row.get("ConnectedLineNum") or None) == (caller.get("CallerIDNum") or ""):
            return linked
        return None


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _listed_age(duration: str | None) -> float | None:
    """A `CoreShowChannel` `Duration` (`HH:MM:SS` since the channel was created) in seconds."""
    parts = (duration or "").split(":")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return None
    hours, minutes, seconds = map(int, parts)
    return float(hours * 3600 + minutes * 60 + seconds)


class AmiClient:
    """One line's connection: login, events into `accept`, ping, reconnect with backoff."""

    def __init__(self, line: AmiLine, accept: Accept,
                 open_calls: Callable[[], Iterable[str]] = tuple) -> None:
        self.line = line
        self.accept = accept
        self.open_calls = open_calls  # the line's calls the journal holds open
        self.calls = AmiCalls(line)
        self.state = "connecting"
        self.detail = ""
        self.attempts = 0
        self._action_ids = itertools.count(1)
        self._pong: asyncio.Event | None = None

    async def run_forever(self) -> None:
        while True:
            try:
                await self.session()
            except (OSError, EOFError, TimeoutError, asyncio.IncompleteReadError,
                    LoginRefused) as exc:
                self.attempts += 1
                RECONNECTS.labels("telephony", self.line.id).inc()
                delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (self.attempts - 1))
                delay *= random.uniform(0.8, 1.2)
                if not isinstance(exc, LoginRefused):
                    self.state, self.detail = "backing_off", f"{type(exc).__name__}: {exc}"
                # Logged once as the link goes (STYLE §10), then quietly at debug level.
                (log.warning if self.attempts == 1 else log.debug)(
                    "pbx_disconnected", line=self.line.id, state=self.state,
                    error=self.detail, retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)

    async def session(self) -> None:
        self.state = "connecting"
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.line.host, self.line.port), 10)
        try:
            banner = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
            if not banner.startswith(b"Asterisk Call Manager/"):
                raise EOFError(f"not an AMI banner: {banner[:60]!r}")
            writer.write(message_bytes(
                Action="Login", Username=self.line.username,
                Secret=self.line.secret.get_secret_value(),
                Events="call,cdr,agent,dialplan", ActionID=str(next(self._action_ids))))
            await writer.drain()
            answer = parse_message(await self._read(reader))
            if answer.get("Response") != "Success":
                self.state = "auth_failed"
                self.detail = answer.get("Message", "login refused")
                raise LoginRefused(self.detail)
            self.state, self.detail, self.attempts = "connected", "", 0
            log.info("pbx_connected", line=self.line.id)
            # What happened while the link was down: the PBX lists the channels it has.
            writer.write(message_bytes(Action="CoreShowChannels",
                                       ActionID=str(next(self._action_ids))))
            await writer.drain()
            listed: list[dict[str, str]] = []
            pinger = asyncio.create_task(self._ping(writer))
            try:
                while True:
                    fields = parse_message(await self._read(reader))
                    if "Response" in fields and "Event" not in fields:
                        if self._pong is not None:  # the answer to our Ping
                            self._pong.set()
                        continue
                    if fields.get("Event") == "CoreShowChannel":
                        # Reconciled whole: an agent's channel may come before its caller's.
                        listed.append(fields)
                        continue
                    if fields.get("Event") == "CoreShowChannelsComplete":
                        events = self.calls.reconcile(listed, self.open_calls())
                    else:
                        events = self.calls.translate(fields)
                    if events:
                        await self.accept(events)  # journaled before the next is read
            finally:
                pinger.cancel()
        finally:
            writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> bytes:
        try:
            return (await reader.readuntil(b"\r\n\r\n"))[:-4]
        except asyncio.LimitOverrunError as exc:
            raise EOFError("an AMI message over the read limit") from exc

    async def _ping(self, writer: asyncio.StreamWriter) -> None:
        while True:
            await asyncio.sleep(PING_EVERY_S)
            self._pong = asyncio.Event()
            writer.write(message_bytes(Action="Ping", ActionID=str(next(self._action_ids))))
            await writer.drain()
            try:
                await asyncio.wait_for(self._pong.wait(), PING_TIMEOUT_S)
            except TimeoutError:
                log.warning("pbx_ping_unanswered", line=self.line.id)
                writer.close()  # the reader sees the end and the session reconnects
                return
