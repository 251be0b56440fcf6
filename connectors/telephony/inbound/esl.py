"""Adapter 4: a FreeSWITCH event socket client (inbound mode), one per `freeswitch_esl` line.

FreeSWITCH speaks first (`Content-Type: auth/request`); the client answers `auth <password>`
and expects `Reply-Text: +OK accepted` (`-ERR invalid` is followed by a disconnect notice and
is retried with the AMI client's backoff), then subscribes with `event plain …`. Each event is
headers (`Content-Length: N`, `Content-Type: text/event-plain`), a blank line, then exactly N
bytes of `Name: value` lines with URL-encoded values, however TCP splits them.

The call id is the a-leg's `Unique-ID`; b-legs join through `Other-Leg-Unique-ID` or
`Channel-Call-UUID`. An a-leg answered by the IVR is no answer; a b-leg on an agent channel
(`agent_channel`) answering is.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import PurePosixPath

from intake import get_logger

from ..normalize import CallEvent
from ..settings import EslLine
from .ami import BACKOFF_FIRST_S, BACKOFF_MAX_S, Accept, LoginRefused
from .runtime import RECONNECTS

log = get_logger(service="telephony", component="esl")

EVENTS = ("CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_BRIDGE CHANNEL_UNBRIDGE "
          "CHANNEL_HANGUP_COMPLETE RECORD_STOP")


def parse_headers(raw: bytes, *, decode: bool = False) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition(":")
        if sep:
            value = value.strip()
            fields[key.strip()] = urllib.parse.unquote(value) if decode else value
    return fields


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, str], dict[str, str]]:
    """One ESL frame: its headers, and its body's event headers (empty without a body)."""
    headers = parse_headers((await reader.readuntil(b"\n\n"))[:-2])
    length = int(headers.get("Content-Length", "0") or 0)
    body = await reader.readexactly(length) if length else b""
    if headers.get("Content-Type") == "text/event-plain":
        return headers, parse_headers(body, decode=True)
    return headers, {}


class EslCalls:
    """Turns a line's FreeSWITCH events into call events."""

    def __init__(self, line: EslLine, clock: Callable[[], float] = time.time) -> None:
        self.line = line
        self.agent = re.compile(line.agent_channel)
        self.clock = clock
        self.a_legs: dict[str, str] = {}  # a-leg Unique-ID -> direction ("internal" dropped)
        self.answered: dict[str, list[str]] = {}

    def _at(self, fields: dict[str, str]) -> datetime:
        try:
            return datetime.fromtimestamp(int(fields["Event-Date-Timestamp"]) / 1e6, UTC)
        except (KeyError, ValueError, OverflowError, OSError):
            return datetime.fromtimestamp(self.clock(), UTC)

    def _event(self, kind: str, call_id: str, fields: dict[str, str],
               **extra: object) -> CallEvent:
        return CallEvent.model_validate({
            "line": self.line.id, "call_id": call_id, "type": kind,
            "occurred_at": self._at(fields), "adapter": "freeswitch_esl",
            "direction": "inbound", **extra})

    def _agent(self, fields: dict[str, str]) -> str | None:
        match = self.agent.search(fields.get("Channel-Name", ""))
        return match.group("agent") if match else None

    def translate(self, fields: dict[str, str]) -> list[CallEvent]:
        name = fields.get("Event-Name")
        uid = fields.get("Unique-ID", "")
        other = fields.get("Other-Leg-Unique-ID") or fields.get("Channel-Call-UUID") or ""
        if name == "CHANNEL_CREATE":
            if fields.get("Call-Direction") == "inbound" and uid not in self.a_legs \
                    and fields.get("Caller-Context") in self.line.inbound_contexts:
                self.a_legs[uid] = "inbound"
                self.answered[uid] = []
                return [self._event("ringing", uid, fields,
                                    from_raw=fields.get("Caller-Caller-ID-Number"),
                                    to_raw=fields.get("Caller-Destination-Number"),
                                    caller_name=fields.get("Caller-Caller-ID-Name"))]
            agent = self._agent(fields)
            if other in self.a_legs and agent:
                return [self._event("ringing", other, fields, agents=[agent])]
            return []
        if name == "CHANNEL_ANSWER" and uid not in self.a_legs and other in self.a_legs:
            agent = self._agent(fields)
            if agent is None or agent in self.answered[other]:
                return []
            kind = "transferred" if self.answered[other] else "answered"
            self.answered[other].append(agent)
            return [self._event(kind, other, fields, agent=agent)]
        if name == "RECORD_STOP" and self.line.recording_url:
            call_id = uid if uid in self.a_legs else other
            if call_id in self.a_legs:
                path = fields.get("Record-File-Path", "")
                url = self.line.recording_url.format(basename=PurePosixPath(path).name,
                                                     path=path)
                return [self._event("recording", call_id, fields, recording_url=url)]
            return []
        if name == "CHANNEL_HANGUP_COMPLETE" and uid in self.a_legs:
            del self.a_legs[uid]
            answered = self.answered.pop(uid, [])
            duration = fields.get("variable_duration")
            billed = fields.get("variable_billsec")
            return [self._event("ended", uid, fields, cause=fields.get("Hangup-Cause"),
                                duration_s=float(duration) if duration else None,
                                talk_s=float(billed) if billed and answered else None)]
        return []


class EslClient:
    """One line's event socket: auth, subscription, events into `accept`, backoff."""

    def __init__(self, line: EslLine, accept: Accept) -> None:
        self.line = line
        self.accept = accept
        self.calls = EslCalls(line)
        self.state = "connecting"
        self.detail = ""
        self.attempts = 0

    async def run_forever(self) -> None:
        while True:
            try:
                await self.session()
            except (OSError, EOFError, TimeoutError, ValueError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, LoginRefused) as exc:
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
            headers, _ = await asyncio.wait_for(read_frame(reader), 10)
            if headers.get("Content-Type") != "auth/request":
                raise EOFError(f"not an event socket: {headers}")
            writer.write(f"auth {self.line.password.get_secret_value()}\n\n".encode())
            await writer.drain()
            headers, _ = await asyncio.wait_for(read_frame(reader), 10)
            if not headers.get("Reply-Text", "").startswith("+OK"):
                self.state, self.detail = "auth_failed", headers.get("Reply-Text", "refused")
                raise LoginRefused(self.detail)
            writer.write(f"event plain {EVENTS}\n\n".encode())
            await writer.drain()
            self.state, self.detail, self.attempts = "connected", "", 0
            log.info("pbx_connected", line=self.line.id)
            while True:
                headers, fields = await read_frame(reader)
                if headers.get("Content-Type") == "text/disconnect-notice":
                    raise EOFError("FreeSWITCH sent a disconnect notice")
                events = self.calls.translate(fields) if fields else []
                if events:
                    await self.accept(events)  # journaled before the next is read
        finally:
            writer.close()
