"""Twilio voice webhooks, signed as Twilio signs them, TwiML parsed."""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import yaml
from aiohttp.test_utils import TestClient

from connectors.telephony import CHANNEL
from connectors.telephony.inbound.twilio import twilio_signature
from connectors.telephony.settings import TwilioLine
from intake.testing import RecordingPublisher, connector_client

EXAMPLE = Path(__file__).resolve().parent.parent / "example.yaml"
TOKEN = "00112233445566778899aabbccddeeff"  # the example's test value
SID = "AC0123456789abcdef0123456789abcdef"
BASE = "http://127.0.0.1:8004"


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
async def client(publisher: RecordingPublisher) -> AsyncIterator[TestClient[Any, Any]]:
    client = await connector_client(CHANNEL, EXAMPLE, publisher)
    yield client
    await client.close()


async def post(client: TestClient[Any, Any], what: str, params: dict[str, str], *,
               token: str = TOKEN, line: str = "twilio-us") -> tuple[int, str]:
    path = f"/twilio/{line}/{what}"
    headers = {"X-Twilio-Signature": twilio_signature(token, BASE + path, params)}
    response = await client.post(path, data=params, headers=headers)
    return response.status, await response.text()


CALL = {"CallSid": "CA1", "AccountSid": SID, "From": "+8613800138000", "To": "+14155550100",
        "CallStatus": "ringing", "Direction": "inbound", "CallerName": "Wang"}


async def test_the_voice_url_pops_and_dials_the_line_targets(
        client: TestClient[Any, Any], publisher: RecordingPublisher) -> None:
    status, body = await post(client, "voice", CALL)
    assert status == 200
    dial = ElementTree.fromstring(body).find("Dial")
    assert dial is not None
    assert dial.get("action") == f"{BASE}/twilio/twilio-us/dial"
    assert dial.get("record") == "record-from-answer-dual"
    assert [(c.tag, c.text) for c in dial] == [("Client", "agent-1001"),
                                               ("Client", "agent-1002")]
    assert dial[0].get("statusCallbackEvent") == "initiated ringing answered completed"
    [pop] = publisher.messages
    assert pop.call is not None
    assert (pop.call.state, pop.call.agents) == ("ringing", ["agent-1001", "agent-1002"])
    assert pop.idempotency_key == "telephony:twilio-us:CA1:ringing"
    assert (await post(client, "voice", CALL))[0] == 200  # Twilio's retry: one event
    assert len(publisher.messages) == 1


async def test_legs_fold_into_their_parent_and_name_the_agent(
        client: TestClient[Any, Any], publisher: RecordingPublisher) -> None:
    await post(client, "voice", CALL)
    leg = {"CallSid": "CA2", "ParentCallSid": "CA1", "AccountSid": SID,
           "To": "client:agent-1002", "CallStatus": "in-progress", "Direction": "outbound-dial",
           "Timestamp": "Sat, 05 Dec 2026 01:30:09 +0000"}
    assert (await post(client, "status", leg))[0] == 204
    done = {**CALL, "CallStatus": "completed", "CallDuration": "95",
            "Timestamp": "Sat, 05 Dec 2026 01:31:40 +0000"}
    assert (await post(client, "status", done))[0] == 204
    assert [m.idempotency_key.rsplit(":", 1)[1] for m in publisher.messages] == [
        "ringing", "answered", "ended"]
    assert publisher.messages[1].call is not None
    assert publisher.messages[1].call.agent == "agent-1002"


async def test_an_unanswered_dial_plays_the_greeting_and_records_a_voicemail(
        client: TestClient[Any, Any], publisher: RecordingPublisher) -> None:
    status, body = await post(client, "dial", {**CALL, "DialCallStatus": "no-answer"})
    assert status == 200
    root = ElementTree.fromstring(body)
    say, record = root.find("Say"), root.find("Record")
    assert say is not None and record is not None and say.get("language") == "zh-CN"
    assert record.get("maxLength") == "120"
    _, body = await post(client, "dial", {**CALL, "DialCallStatus": "completed"})
    assert ElementTree.fromstring(body).find("Hangup") is not None
    await post(client, "recording", {**CALL, "RecordingSid": "RE1", "RecordingSource":
                                     "RecordVerb", "RecordingStatus": "completed",
                                     "RecordingUrl": "http://127.0.0.1:18090/RE1"})
    [_, ended] = publisher.messages
    assert ended.call is not None and ended.call.state == "ended"


async def test_a_withheld_twilio_caller_has_no_identity(
        client: TestClient[Any, Any], publisher: RecordingPublisher) -> None:
    await post(client, "voice", {**CALL, "From": "+266696687"})
    [pop] = publisher.messages
    assert pop.sender.identities == [] and pop.call is not None and pop.call.withheld


async def test_bad_requests_are_refused(client: TestClient[Any, Any],
                                        publisher: RecordingPublisher) -> None:
    assert (await post(client, "voice", CALL, token="0" * 32))[0] == 403
    assert (await post(client, "voice", {**CALL, "AccountSid": "AC" + "1" * 32}))[0] == 403
    assert (await post(client, "voice", {k: v for k, v in CALL.items() if k != "CallSid"})
            )[0] == 400
    assert (await post(client, "voice", CALL, line="hotline"))[0] == 404
    response = await client.post("/twilio/twilio-us/voice", data=CALL)
    assert response.status == 403
    assert publisher.messages == []


async def test_a_json_body_is_covered_by_body_sha256(
        client: TestClient[Any, Any], publisher: RecordingPublisher) -> None:
    body = b'{"CallSid": "CA9", "AccountSid": "%s", "CallStatus": "completed"}' % SID.encode()
    query = "?" + urllib.parse.urlencode({"bodySHA256": hashlib.sha256(body).hexdigest()})
    path = "/twilio/twilio-us/status" + query
    headers = {"X-Twilio-Signature": twilio_signature(TOKEN, BASE + path, {}),
               "Content-Type": "application/json"}
    response = await client.post(path, data=body, headers=headers)
    assert response.status == 204
    [ended] = publisher.messages[-1:]
    assert ended.idempotency_key == "telephony:twilio-us:CA9:ended"
    response = await client.post(path, data=body + b" ", headers=headers)
    assert response.status == 403


# -- a webhook rule's shared key (HMAC_SHA256) ------------------------------------------------

SHARED = "twilio-shared-key-secret-0001"
RULE = {"X-Twilio-Webhooks-Signature-Settings": "key=SK0123456789abcdef0123456789abcdef,"
                                                "algorithm=HMAC_SHA256"}
SK_CALL = {"CallSid": "CA7", "AccountSid": SID, "From": "+8613800138000",
           "To": "+14155550100", "CallStatus": "ringing"}
# Computed apart from the code under test, with
#   printf '%s' "<url><name><value>…" | openssl dgst -sha256 -hmac "$SHARED" -binary | base64
SK_VOICE_SIGNATURE = "7y2C+DAC7aNIdYvs5LBxIJqGevF6oIS0NP19FvSERQw="
SK_JSON = (b'{"CallSid": "CA8", "AccountSid": "AC0123456789abcdef0123456789abcdef", '
           b'"CallStatus": "completed"}')
SK_JSON_SHA256 = "6d473f1f4bd8299ae21e4ec2de0be9b1cb3721a358cb4ff39f9978e3ffa8141b"
SK_JSON_SIGNATURE = "XuEI990q+pcjUQiojsf8bf/Ue7VyT+2XoJTPONnUdrQ="


@pytest.fixture
async def shared_client(tmp_path: Path, publisher: RecordingPublisher,
                        ) -> AsyncIterator[TestClient[Any, Any]]:
    config = yaml.safe_load(EXAMPLE.read_text())
    lines = config["channels"]["telephony"]["lines"]
    twilio = next(line for line in lines if line["id"] == "twilio-us")
    lines.append({**twilio, "id": "twilio-sk", "shared_key_secret": SHARED,
                  "require_shared_key": True})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    client = await connector_client(CHANNEL, path, publisher)
    yield client
    await client.close()


async def test_a_request_under_a_webhook_rule_is_checked_with_the_shared_key_and_sha256(
        shared_client: TestClient[Any, Any], publisher: RecordingPublisher) -> None:
    assert twilio_signature(SHARED, f"{BASE}/twilio/twilio-sk/voice", SK_CALL,
                            "HMAC_SHA256") == SK_VOICE_SIGNATURE
    response = await shared_client.post("/twilio/twilio-sk/voice", data=SK_CALL, headers={
        **RULE, "X-Twilio-Signature": SK_VOICE_SIGNATURE})
    assert response.status == 200
    assert [m.idempotency_key for m in publisher.messages] == [
        "telephony:twilio-sk:CA7:ringing"]


async def test_a_json_body_under_a_webhook_rule_is_covered_by_body_sha256(
        shared_client: TestClient[Any, Any], publisher: RecordingPublisher) -> None:
    assert hashlib.sha256(SK_JSON).hexdigest() == SK_JSON_SHA256
    path = f"/twilio/twilio-sk/status?bodySHA256={SK_JSON_SHA256}"
    headers = {**RULE, "X-Twilio-Signature": SK_JSON_SIGNATURE,
               "Content-Type": "application/json"}
    assert (await shared_client.post(path, data=SK_JSON, headers=headers)).status == 204
    assert publisher.messages[-1].idempotency_key == "telephony:twilio-sk:CA8:ended"
    response = await shared_client.post(path, data=SK_JSON.replace(b"CA8", b"CA6"),
                                        headers=headers)
    assert response.status == 403


async def test_shared_key_signatures_are_refused_where_they_cannot_be_checked(
        shared_client: TestClient[Any, Any], publisher: RecordingPublisher) -> None:
    async def status(line: str, signature: str, headers: dict[str, str]) -> int:
        response = await shared_client.post(f"/twilio/{line}/voice", data=SK_CALL,
                                            headers={**headers, "X-Twilio-Signature": signature})
        return response.status

    sk_url = f"{BASE}/twilio/twilio-sk/voice"
    us_url = f"{BASE}/twilio/twilio-us/voice"
    # The auth token's HMAC-SHA1, on a line that requires its shared key.
    assert await status("twilio-sk", twilio_signature(TOKEN, sk_url, SK_CALL), {}) == 403
    # SHA-1 with the shared key but the header saying SHA-256; an unknown algorithm.
    assert await status("twilio-sk", twilio_signature(SHARED, sk_url, SK_CALL), RULE) == 403
    odd = {**RULE, "X-Twilio-Webhooks-Signature-Settings": "key=SK1,algorithm=HMAC_MD5"}
    assert await status("twilio-sk", SK_VOICE_SIGNATURE, odd) == 403
    # A line without a shared key: the rule's header cannot be checked there.
    us = twilio_signature(SHARED, us_url, SK_CALL, "HMAC_SHA256")
    assert await status("twilio-us", us, RULE) == 403
    # Without the rule's header, the other line still takes its auth token's signature.
    assert await status("twilio-us", twilio_signature(TOKEN, us_url, SK_CALL), {}) == 200
    assert [m.idempotency_key for m in publisher.messages] == [
        "telephony:twilio-us:CA7:ringing"]


def test_require_shared_key_without_a_secret_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="require_shared_key needs shared_key_secret"):
        TwilioLine.model_validate({"id": "t", "adapter": "twilio", "account_sid": SID,
                                   "auth_token": TOKEN, "public_url": BASE,
                                   "require_shared_key": True})
