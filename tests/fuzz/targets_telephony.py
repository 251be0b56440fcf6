"""Telephony: the signed generic CTI webhook, number parsing, AMI message decoding."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import strategies as st

from connectors.telephony.channel import CHANNEL
from connectors.telephony.inbound.ami import AmiCalls, parse_message
from connectors.telephony.inbound.generic import sign
from connectors.telephony.normalize import fold, parse_number
from connectors.telephony.settings import AmiLine
from intake.message import Message
from intake.settings import REPO_ROOT
from intake.testing import RecordingPublisher, connector_client

from .edge import Edge
from .harness import Target, hostile_text

CONFIG = REPO_ROOT / "deploy" / "intake.example.yaml"
SECRET = "whsec_aW50YWtlLWhvdGxpbmUtdGVzdC1zZWNyZXQtMDAx"  # the example's test value
EVENTS = ("call.ringing", "call.answered", "call.transferred", "call.ended", "call.missed",
          "call.voicemail", "call.recording")
VALID = {"event": "call.ringing", "call_id": "c-1", "occurred_at": "2026-12-05T09:30:00+08:00",
         "from": "013800138000", "to": "400-800-1234"}
FIELDS = (*VALID, "direction", "caller_name", "agent", "agents", "queue", "cause",
          "duration_s", "talk_s", "recording_url", "recording_duration_s", "events")
publisher = RecordingPublisher()


async def _start() -> Any:
    return await connector_client(CHANNEL, CONFIG, publisher)


EDGE = Edge(_start)

# What an HTTP client can send in a header (aiohttp refuses control characters itself).
header_text = st.one_of(st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                              blacklist_characters="\x7f"), max_size=60),
                        st.sampled_from(["v1,", "v1,AAAA", "v2,x v1,y", "1796527800", "-1",
                                         "9" * 30, "1e3"]))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), hostile_text(),
                         st.sampled_from([*EVENTS, "anonymous", "sip:1001@pbx", "-1",
                                          "2026-12-05T09:30:00Z", "1e309"]))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(hostile_text(10), inner, max_size=4)),
    max_leaves=12)
numbers = st.one_of(hostile_text(30), st.from_regex(
    r"(tel:|sip:)?(\+|00)?[0-9 ()\-.]{0,20}((ext\.|;ext=|-|转)[0-9]{0,6})?", fullmatch=True))


@st.composite
def event_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["mutated", "mutated", "batch", "random", "bytes"]))
    if kind in ("mutated", "batch"):
        data: dict[str, Any] = dict(VALID)
        for name in draw(st.lists(st.one_of(st.sampled_from(FIELDS), hostile_text(12)),
                                  max_size=4)):
            if draw(st.booleans()):
                data.pop(name, None)
            else:
                data[name] = draw(st.one_of(json_values, numbers))
        payload: Any = {"events": [data, dict(VALID)]} if kind == "batch" else data
        return json.dumps(payload).encode()
    if kind == "random":
        return json.dumps(draw(json_values)).encode()
    return draw(st.binary(max_size=200))


def check_signed_event(value: tuple[str, bytes]) -> None:
    """Correctly signed, so that every body reaches the parser: 202 or a 4xx, never a 5xx."""
    line, body = value
    stamp = int(time.time())
    webhook_id = f"fuzz-{time.monotonic_ns()}"
    before = len(publisher.messages)
    status, _, answer = EDGE.request("POST", f"/cti/{line}/events", headers={
        "Content-Type": "application/json", "webhook-id": webhook_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(SECRET, webhook_id, stamp, body)}, data=body)
    if status != 202:
        assert len(publisher.messages) == before, (status, answer[:200])
    for message in publisher.messages[before:]:
        Message.model_validate_json(message.model_dump_json())
    del publisher.messages[:]


def check_headers(value: tuple[dict[str, str], bytes]) -> None:
    headers, body = value
    status, _, _ = EDGE.request("POST", "/cti/hotline/events",
                                headers={"Content-Type": "application/json", **headers},
                                data=body)
    assert status == 403, status  # never accepted without the signature
    del publisher.messages[:]


def check_number(value: tuple[str, str]) -> None:
    raw, region = value
    number = parse_number(raw, region)
    assert number.e164 is None or number.e164.startswith("+")
    assert not (number.withheld and number.e164)


AMI_LINE = AmiLine.model_validate({"id": "asterisk-lab", "adapter": "asterisk_ami",
                                   "host": "127.0.0.1", "username": "u", "secret": "s"})


def check_ami(messages: list[bytes]) -> None:
    calls = AmiCalls(AMI_LINE)
    events = [e for raw in messages for e in calls.translate(parse_message(raw))]
    for call_id in {e.call_id for e in events}:
        fold([e for e in events if e.call_id == call_id], "CN")


ami_fields = st.dictionaries(
    st.sampled_from(["Event", "Uniqueid", "Linkedid", "Channel", "DestChannel", "Context",
                     "CallerIDNum", "CallerIDName", "DialStatus", "Timestamp", "Variable",
                     "Value", "Application", "Exten"]),
    st.one_of(hostile_text(20), st.sampled_from(
        ["Newchannel", "DialBegin", "DialEnd", "Hangup", "VarSet", "NewExten", "1.1",
         "from-pstn", "PJSIP/1001-0001", "ANSWER", "MIXMONITOR_FILENAME", "VoiceMail",
         "1e309", "nan", "-1"])), max_size=8).map(
    lambda d: "".join(f"{k}: {v}\r\n" for k, v in d.items()).encode("utf-8", "replace"))


def targets() -> list[Target]:
    return [
        Target("telephony_signed_events",
               st.tuples(st.sampled_from(["hotline", "hotline", "lab", "twilio-us", "x"]),
                         event_bodies()), check_signed_event),
        Target("telephony_signature_headers", st.tuples(st.dictionaries(
            st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature"]),
            header_text, max_size=3), event_bodies()), check_headers),
        Target("telephony_numbers", st.tuples(numbers, st.sampled_from(["CN", "US", "GB"])),
               check_number, scale=0.5),
        Target("telephony_ami_messages", st.lists(st.one_of(ami_fields, st.binary(max_size=80)),
                                                  max_size=12), check_ami, scale=0.5),
    ]
