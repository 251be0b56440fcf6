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
import json
import random
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import PurePosixPath

from intake import get_logger

from ..normalize import GONE_AFTER_RECONNECT, CallEvent
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


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, str], bytes]:
    """One ESL frame: its headers and its body (`Content-Length` bytes, empty without)."""
    headers = parse_headers((await reader.readuntil(b"\n\n"))[:-2])
    length = int(headers.get("Content-Length", "0") or 0)
    return headers, await reader.readexactly(length) if length else b""


def channel_rows(body: bytes) -> list[dict[str, str]] | None:
    """The rows of `api show channels as json` (`{"row_count": 0}` has none); None when the
    answer is no such listing (`-ERR …`)."""
    try:
        listing = json.loads(body)
    except ValueError:
        return None
    if not isinstance(listing, dict) or "row_count" not in listing:
        return None
    rows = listing.get("rows") or []
    return [{k: str(v) for k, v in row.items() if v is not None}
            for row in rows if isinstance(row, dict)]


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


    def reconcile(self, rows: list[dict[str, str]], open_calls: Iterable[str] = ()
                  ) -> list[CallEvent]:
        """After a (re)connect, `show channels`' rows against what is known: a call (known
        here, or open in the journal: `open_calls`, after a restart) whose a-leg is no longer
        listed ended while the link was down and ends now; a listed inbound a-leg not known is
        adopted (its ringing), and a listed agent leg up on a known call answers it."""
        listed = {row.get("uuid", "") for row in rows}
        events: list[CallEvent] = []
        for uid in [*self.a_legs, *(c for c in open_calls if c not in self.a_legs)]:
            if uid not in listed:
                self.a_legs.pop(uid, None)
                self.answered.pop(uid, None)
                events.append(self._event("ended", uid, {}, cause=GONE_AFTER_RECONNECT))
        for row in sorted(rows, key=lambda r: r.get("direction") != "inbound"):  # a-legs first
            uid = row.get("uuid", "")
            if row.get("direction") == "inbound":
                if uid in self.a_legs:
                    continue
                fields = {"Event-Name": "CHANNEL_CREATE", "Unique-ID": uid,
                          "Call-Direction": "inbound", "Caller-Context": row.get("context", ""),
                          "Caller-Caller-ID-Number": row.get("cid_num", ""),
                          "Caller-Caller-ID-Name": row.get("cid_name", ""),
                          "Caller-Destination-Number": row.get("dest", "")}
                if row.get("created_epoch", "").isdigit():
                    fields["Event-Date-Timestamp"] = str(int(row["created_epoch"]) * 1_000_000)
                events += self.translate(fields)
            elif row.get("callstate") == "ACTIVE" and row.get("call_uuid") in self.a_legs:
                # An agent leg up: answered while the link was down (or known already, then
                # translate() drops it). Its answer time is not listed: the time of receipt.
                events += self.translate({"Event-Name": "CHANNEL_ANSWER", "Unique-ID": uid,
                                          "Other-Leg-Unique-ID": row["call_uuid"],
                                          "Channel-Name": row.get("name", "")})
        return events


class EslClient:
    """One line's event socket: auth, subscription, events into `accept`, backoff."""

    def __init__(self, line: EslLine, accept: Accept,
                 open_calls: Callable[[], Iterable[str]] = tuple) -> None:
        self.line = line
        self.accept = accept
        # The line's calls the journal holds open: after a connector restart this client
        # knows none of them, and those the PBX no longer lists must still end.
        self.open_calls = open_calls
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
            # What happened while the link was down: the channels FreeSWITCH has now (the
            # answer comes among the events subscribed to just before, as `api/response`).
            writer.write(b"api show channels as json\n\n")
            await writer.drain()
            self.state, self.detail, self.attempts = "connected", "", 0
            log.info("pbx_connected", line=self.line.id)
            while True:
                headers, body = await read_frame(reader)
                kind = headers.get("Content-Type")
                if kind == "text/disconnect-notice":
                    raise EOFError("FreeSWITCH sent a disconnect notice")
                events: list[CallEvent] = []
                if kind == "text/event-plain":
                    events = self.calls.translate(parse_headers(body, decode=True))
                elif kind == "api/response":
                    rows = channel_rows(body)
                    if rows is None:
                        log.warning("pbx_channels_unlisted", line=self.line.id,
                                    answer=body[:200].decode("utf-8", "replace"))
                    else:
                        events = self.calls.reconcile(rows, self.open_calls())
                if events:
                    await self.accept(events)  # journaled before the next is read
        finally:
            writer.close()
