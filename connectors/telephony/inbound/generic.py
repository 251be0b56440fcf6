"""Adapter 1: the generic CTI webhook, `POST /cti/{line}/events`, signed per Standard Webhooks.

Any PBX or cloud call centre posts one event or `{"events": [...]}` (a batch is accepted or
refused whole) with the headers `webhook-id`, `webhook-timestamp` and `webhook-signature`
(`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, several space-separated for key
rotation; https://www.standardwebhooks.com/). The answer is 202 once every event is in the
journal and the progress it makes is durable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from intake import SERVICE_SETTINGS, IntakeError, error_answer

from ..errors import (
    EventInvalid,
    JsonInvalid,
    LineUnknown,
    MediaTypeUnsupported,
    PayloadTooLarge,
    SignatureInvalid,
    SignatureMissing,
    TimestampOutOfWindow,
)
from ..normalize import CallEvent
from ..settings import GenericLine, TelephonySettings
from .runtime import DUPLICATES, EVENTS_IN, PROGRESS_SECONDS, telephony_state

MAX_EVENTS = 100


class GenericEvent(BaseModel):
    """One event as the PBX posts it."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, populate_by_name=True)

    event: Literal["call.ringing", "call.answered", "call.transferred", "call.ended",
                   "call.missed", "call.voicemail", "call.recording"]
    call_id: str = Field(min_length=1, max_length=200)
    occurred_at: AwareDatetime
    direction: Literal["inbound", "outbound"] | None = None
    from_: str | None = Field(default=None, alias="from", max_length=512)
    to: str | None = Field(default=None, max_length=512)
    caller_name: str | None = Field(default=None, max_length=512)
    agent: str | None = Field(default=None, max_length=200)
    agents: list[str] = Field(default_factory=list, max_length=200)
    queue: str | None = Field(default=None, max_length=200)
    cause: str | None = Field(default=None, max_length=200)
    duration_s: float | None = Field(default=None, ge=0)
    talk_s: float | None = Field(default=None, ge=0)
    recording_url: str | None = Field(default=None, max_length=2048)
    recording_duration_s: float | None = Field(default=None, ge=0)

    def normalized(self, line: str) -> CallEvent:
        return CallEvent(
            line=line, call_id=self.call_id, type=self.event.removeprefix("call."),  # type: ignore[arg-type]
            occurred_at=self.occurred_at, adapter="generic", direction=self.direction,
            from_raw=self.from_, to_raw=self.to, caller_name=self.caller_name,
            agent=self.agent, agents=self.agents, queue=self.queue, cause=self.cause,
            duration_s=self.duration_s, talk_s=self.talk_s, recording_url=self.recording_url,
            recording_duration_s=self.recording_duration_s)


def signing_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header's value for a body (what a PBX computes)."""
    digest = hmac.new(signing_key(secret), f"{webhook_id}.{timestamp}.".encode() + body,
                      hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_signature(secret: str, headers: Any, body: bytes, *, now: float,
                     tolerance_s: float) -> str:
    """The webhook id of a correctly signed, fresh request; raises a 403 error otherwise."""
    webhook_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not webhook_id or not stamp or not signatures:
        raise SignatureMissing("webhook-id, webhook-timestamp and webhook-signature are needed")
    try:
        timestamp = int(stamp)
    except ValueError as exc:
        raise SignatureInvalid("webhook-timestamp is not Unix seconds") from exc
    if abs(now - timestamp) > tolerance_s:
        raise TimestampOutOfWindow(
            f"webhook-timestamp is more than {int(tolerance_s)} s from the gateway's clock")
    expected = sign(secret, webhook_id, timestamp, body).encode()
    for candidate in signatures.split():
        if candidate.startswith("v1,") and hmac.compare_digest(candidate.encode(), expected):
            return str(webhook_id)
    raise SignatureInvalid("no signature matches the line's secret")


def parse_events(body: bytes, line: str) -> list[CallEvent]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise JsonInvalid(f"the body is not JSON: {exc}") from exc
    batch = isinstance(payload, dict) and "events" in payload
    items = payload["events"] if batch else [payload]
    if not isinstance(items, list) or not items or len(items) > MAX_EVENTS:
        raise EventInvalid({"events": f"a list of 1 to {MAX_EVENTS} events"})
    fields: dict[str, str] = {}
    events: list[CallEvent] = []
    for index, item in enumerate(items):
        prefix = f"events.{index}." if batch else ""
        if not isinstance(item, dict):
            fields[prefix.rstrip(".") or "body"] = "an event is a JSON object"
            continue
        try:
            events.append(GenericEvent.model_validate(item).normalized(line))
        except ValidationError as exc:
            for error in exc.errors():
                where = ".".join(str(part) for part in error["loc"]) or "body"
                fields[prefix + where] = error["msg"]
    if fields:
        raise EventInvalid(fields)
    return events


async def receive(request: web.Request) -> web.Response:
    settings: TelephonySettings = request.app[SERVICE_SETTINGS]  # type: ignore[assignment]
    line_id = request.match_info["line"]
    try:
        state = await telephony_state(request.app)
        line = state.line(line_id)
        if not isinstance(line, GenericLine):
            raise LineUnknown(f"no generic CTI line {line_id!r}")
        if request.content_type != "application/json":
            raise MediaTypeUnsupported("post the events as application/json")
        if (request.content_length or 0) > settings.max_body_bytes:
            raise PayloadTooLarge(f"the body is over {settings.max_body_bytes} bytes")
        body = await request.content.read(settings.max_body_bytes + 1)
        if len(body) > settings.max_body_bytes:
            raise PayloadTooLarge(f"the body is over {settings.max_body_bytes} bytes")
        webhook_id = verify_signature(line.secret.get_secret_value(), request.headers, body,
                                      now=time.time(),
                                      tolerance_s=settings.timestamp_tolerance_s)
        events = parse_events(body, line.id)
        EVENTS_IN.labels("telephony", line.id).inc(len(events))
        if await state.seen(line.id, webhook_id):
            DUPLICATES.labels("telephony", line.id).inc(len(events))
            return web.json_response({"accepted": 0, "duplicates": len(events)}, status=202)
        with PROGRESS_SECONDS.labels("telephony", line.id).time():
            accepted = await state.accept_all(line.id, events)
        DUPLICATES.labels("telephony", line.id).inc(len(events) - accepted)
        await state.remember(line.id, webhook_id)
    except IntakeError as exc:
        return error_answer(exc, "telephony")
    return web.json_response({"accepted": accepted, "duplicates": len(events) - accepted},
                             status=202)

