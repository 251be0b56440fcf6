"""Adapter 2: Twilio-compatible voice webhooks, `POST /twilio/{line}/{voice|dial|status|recording}`.

Every request is checked as Twilio signs it (https://www.twilio.com/docs/usage/security):
`X-Twilio-Signature` is base64 HMAC-SHA1, keyed with the auth token, of the URL Twilio called
(the line's `public_url` + path + query) followed by every POST parameter name and value sorted
by name; a JSON body is covered by its `bodySHA256` query parameter instead. Under a webhook
rule (`X-Twilio-Webhooks-Signature-Settings: key=…,algorithm=HMAC_SHA256`) the same string is
signed with the line's `shared_key_secret` and that algorithm. The `twilio`
package's `RequestValidator` does the same; it is not on this machine's package index, so these
few lines follow its algorithm (the tests sign as it does). TwiML is written with ElementTree.
Twilio retries and does not promise order: the same callback twice is one event (its
parameters' digest is remembered as a webhook id).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from xml.etree import ElementTree

import orjson
from aiohttp import web

from intake import IntakeError, Rejected, error_answer

from ..errors import LineUnknown, SignatureInvalid, SignatureMissing
from ..normalize import CallEvent
from ..settings import TwilioLine
from .runtime import DUPLICATES, EVENTS_IN, telephony_state

ENDED = {"completed", "busy", "no-answer", "failed", "canceled"}


class CallSidMissing(Rejected):
    reason = "call_sid_missing"
    status = 400


# Set by Twilio when a Webhook Rule matches the URL: `key=<SharedKey SID>,algorithm=HMAC_SHA256`.
# The request is then signed with that shared key's secret and algorithm instead of the auth
# token and HMAC-SHA1; the signed string is the same (the URL, then the sorted parameters).
SIGNATURE_SETTINGS = "X-Twilio-Webhooks-Signature-Settings"
ALGORITHMS = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}


def twilio_signature(key: str, url: str, params: dict[str, str],
                     algorithm: str = "HMAC_SHA1") -> str:
    """What Twilio puts in X-Twilio-Signature for a POST to `url`, keyed with the auth token
    (HMAC_SHA1) or a webhook rule's shared key secret (its algorithm)."""
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(key.encode(), payload.encode(), ALGORITHMS[algorithm]).digest()
    return base64.b64encode(digest).decode()


def signing_key(line: TwilioLine, settings: str | None) -> tuple[str, str]:
    """The key and algorithm a request says it was signed with; refuses what the line cannot
    check (an unknown algorithm, a shared key the line has no secret for) and, on a line with
    `require_shared_key`, a request signed with the auth token."""
    if settings is None:
        if line.require_shared_key:
            raise SignatureInvalid("this line takes only requests signed with its shared key")
        return line.auth_token.get_secret_value(), "HMAC_SHA1"
    fields = dict(part.strip().partition("=")[::2] for part in settings.split(","))
    algorithm = fields.get("algorithm", "").strip().upper()
    if algorithm not in ALGORITHMS:
        raise SignatureInvalid(f"unsupported signature algorithm {algorithm[:40]!r}")
    if line.shared_key_secret is None:
        raise SignatureInvalid("signed with a shared key; the line has no shared_key_secret")
    return line.shared_key_secret.get_secret_value(), algorithm


def agent_of(target: str | None) -> str | None:
    """`client:agent-1001` → `agent-1001`, `sip:1001@pbx` → `1001`, a number stays itself."""
    if not target:
        return None
    for scheme in ("client:", "sip:", "sips:"):
        if target.lower().startswith(scheme):
            return target[len(scheme):].split("@", 1)[0] or None
    return target


async def _verified(request: web.Request) -> tuple[TwilioLine, dict[str, str]]:
    state = await telephony_state(request.app)
    line = state.line(request.match_info["line"])
    if not isinstance(line, TwilioLine):
        raise LineUnknown(f"no Twilio line {request.match_info['line']!r}")
    signature = request.headers.get("X-Twilio-Signature")
    if not signature:
        raise SignatureMissing("X-Twilio-Signature is needed")
    url = line.public_url.rstrip("/") + request.path_qs
    key, algorithm = signing_key(line, request.headers.get(SIGNATURE_SETTINGS))
    body = await request.read()
    if "bodySHA256" in request.query:
        if not hmac.compare_digest(hashlib.sha256(body).hexdigest(),
                                   request.query["bodySHA256"]):
            raise SignatureInvalid("bodySHA256 does not match the body")
        expected = twilio_signature(key, url, {}, algorithm)
        try:
            loaded = orjson.loads(body)
        except orjson.JSONDecodeError:
            loaded = None
        params: dict[str, str] = ({str(k): str(v) for k, v in loaded.items()}
                                  if isinstance(loaded, dict) else {})
    else:
        form = await request.post()
        params = {k: str(v) for k, v in form.items()}
        expected = twilio_signature(key, url, params, algorithm)
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise SignatureInvalid("X-Twilio-Signature does not match")
    if params.get("AccountSid", line.account_sid) != line.account_sid:
        raise SignatureInvalid("the AccountSid is not this line's")
    if not params.get("CallSid"):
        raise CallSidMissing("no CallSid")
    return line, params


def _at(params: dict[str, str]) -> datetime:
    try:
        return parsedate_to_datetime(params["Timestamp"]).astimezone(UTC)
    except (KeyError, TypeError, ValueError):
        return datetime.now(UTC)


def _event(line: TwilioLine, params: dict[str, str], kind: str, **fields: Any) -> CallEvent:
    call_id = params.get("ParentCallSid") or params["CallSid"]
    direction = "outbound" if params.get("Direction", "inbound").startswith("outbound") \
        and not params.get("ParentCallSid") else "inbound"
    return CallEvent.model_validate({
        "line": line.id, "call_id": call_id, "type": kind, "occurred_at": _at(params),
        "adapter": "twilio", "direction": direction, **fields})


async def _accept(request: web.Request, line: TwilioLine, params: dict[str, str],
                  events: list[CallEvent]) -> None:
    state = await telephony_state(request.app)
    digest = "twilio:" + hashlib.sha256(
        repr(sorted(params.items())).encode() + request.path.encode()).hexdigest()
    if await state.seen(line.id, digest):
        DUPLICATES.labels("telephony", line.id).inc(len(events))
        return
    EVENTS_IN.labels("telephony", line.id).inc(len(events))
    await state.accept_all(line.id, events)
    await state.remember(line.id, digest)


def _twiml(root: ElementTree.Element) -> web.Response:
    return web.Response(body=b'<?xml version="1.0" encoding="UTF-8"?>'
                        + ElementTree.tostring(root, encoding="utf-8"),
                        content_type="text/xml")


def _url(line: TwilioLine, what: str) -> str:
    return f"{line.public_url.rstrip('/')}/twilio/{line.id}/{what}"


async def voice(request: web.Request) -> web.Response:
    try:
        line, params = await _verified(request)
        agents = [a for a in (agent_of(t) for t in line.dial) if a]
        await _accept(request, line, params, [_event(
            line, params, "ringing", from_raw=params.get("From"), to_raw=params.get("To"),
            caller_name=params.get("CallerName"), agents=agents)])
    except IntakeError as exc:
        return error_answer(exc, "telephony")
    response = ElementTree.Element("Response")
    if line.twiml and line.dial:
        dial = ElementTree.SubElement(response, "Dial", {
            "timeout": str(int(line.ring_timeout_s)), "action": _url(line, "dial")})
        if line.record_calls:
            dial.set("record", "record-from-answer-dual")
            dial.set("recordingStatusCallback", _url(line, "recording"))
        for target in line.dial:
            scheme, _, rest = target.partition(":")
            tag = {"client": "Client", "sip": "Sip"}.get(scheme.lower(), "Number")
            noun = ElementTree.SubElement(dial, tag, {
                "statusCallback": _url(line, "status"),
                "statusCallbackEvent": "initiated ringing answered completed"})
            noun.text = rest if tag == "Client" else target
    return _twiml(response)


async def dial(request: web.Request) -> web.Response:
    try:
        line, params = await _verified(request)
    except IntakeError as exc:
        return error_answer(exc, "telephony")
    response = ElementTree.Element("Response")
    status = params.get("DialCallStatus", "")
    if status not in ("completed", "answered") and line.voicemail is not None:
        greeting = line.voicemail
        if greeting.play:
            ElementTree.SubElement(response, "Play").text = greeting.play
        elif greeting.greeting:
            ElementTree.SubElement(response, "Say", {"language": greeting.language}).text = (
                greeting.greeting)
        ElementTree.SubElement(response, "Record", {
            "maxLength": str(greeting.max_length_s),
            "recordingStatusCallback": _url(line, "recording"),
            "action": _url(line, "dial")})
    else:
        ElementTree.SubElement(response, "Hangup")
    return _twiml(response)


async def status(request: web.Request) -> web.Response:
    try:
        line, params = await _verified(request)
        call_status = params.get("CallStatus", "")
        events: list[CallEvent] = []
        if params.get("ParentCallSid"):  # a <Dial> leg: the leg in progress names the agent
            if call_status in ("in-progress", "answered"):
                events.append(_event(line, params, "answered", agent=agent_of(params.get("To"))))
        elif call_status in ENDED:
            duration = params.get("CallDuration")
            events.append(_event(line, params, "ended", cause=call_status.replace("-", "_"),
                                 duration_s=float(duration) if duration else None))
        if events:
            await _accept(request, line, params, events)
    except (IntakeError, ValueError) as exc:
        error = exc if isinstance(exc, IntakeError) else Rejected(str(exc))
        return error_answer(error, "telephony")
    return web.Response(status=204)


async def recording(request: web.Request) -> web.Response:
    try:
        line, params = await _verified(request)
        url = params.get("RecordingUrl")
        if url and params.get("RecordingStatus", "completed") == "completed":
            kind = "voicemail" if params.get("RecordingSource") == "RecordVerb" else "recording"
            await _accept(request, line, params, [_event(line, params, kind,
                                                         recording_url=url)])
    except IntakeError as exc:
        return error_answer(exc, "telephony")
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    return [web.post("/twilio/{line}/voice", voice), web.post("/twilio/{line}/dial", dial),
            web.post("/twilio/{line}/status", status),
            web.post("/twilio/{line}/recording", recording)]

