"""The generic CTI webhook: signatures, bad input, duplicates (in-memory publisher and blobs)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from connectors.telephony import CHANNEL
from connectors.telephony.inbound.generic import sign
from intake.testing import RecordingPublisher, connector_client

EXAMPLE = Path(__file__).resolve().parent.parent / "example.yaml"
SECRET = "whsec_aW50YWtlLWhvdGxpbmUtdGVzdC1zZWNyZXQtMDAx"
RINGING = {"event": "call.ringing", "call_id": "c-1", "occurred_at": "2026-12-05T09:30:00+08:00",
           "from": "13800138000"}


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
async def client(publisher: RecordingPublisher) -> AsyncIterator[TestClient[Any, Any]]:
    client = await connector_client(CHANNEL, EXAMPLE, publisher)
    yield client
    await client.close()


def signed(body: bytes, webhook_id: str = "msg_1", *, secret: str = SECRET,
           at: float | None = None) -> dict[str, str]:
    stamp = int(at if at is not None else time.time())
    return {"Content-Type": "application/json", "webhook-id": webhook_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": "v1,bm90LXRoaXMtb25l " + sign(secret, webhook_id, stamp, body)}


async def post(client: TestClient[Any, Any], payload: Any, line: str = "hotline",
               **kwargs: Any) -> tuple[int, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = kwargs.pop("headers", None) or signed(body, **kwargs)
    response = await client.post(f"/cti/{line}/events", data=body, headers=headers)
    return response.status, await response.json()


async def test_a_signed_event_is_accepted_and_pops(client: TestClient[Any, Any],
                                                   publisher: RecordingPublisher) -> None:
    assert await post(client, RINGING) == (202, {"accepted": 1, "duplicates": 0})
    [message] = publisher.messages
    assert message.call is not None and message.call.from_ == "+8613800138000"


async def test_a_repeated_webhook_id_and_a_resigned_repeat_are_duplicates(
        client: TestClient[Any, Any], publisher: RecordingPublisher) -> None:
    await post(client, RINGING)
    assert await post(client, RINGING) == (202, {"accepted": 0, "duplicates": 1})
    assert await post(client, RINGING, webhook_id="msg_2") == (
        202, {"accepted": 0, "duplicates": 1})
    assert len(publisher.messages) == 1


@pytest.mark.parametrize(("change", "status", "error"), [
    ({"secret": "whsec_b3RoZXItc2VjcmV0LW9mLTE2Ynl0ZXM="}, 403, "signature_invalid"),
    ({"at": time.time() - 301}, 403, "timestamp_out_of_window"),
    ({"headers": {"Content-Type": "application/json"}}, 403, "signature_missing"),
])
async def test_a_bad_signature_is_refused_with_403(
        client: TestClient[Any, Any], publisher: RecordingPublisher, change: dict[str, Any],
        status: int, error: str) -> None:
    got_status, body = await post(client, RINGING, **change)
    assert (got_status, body["error"]) == (status, error)
    assert publisher.messages == []


async def test_bad_input_gets_its_own_answer(client: TestClient[Any, Any]) -> None:
    assert (await post(client, RINGING, line="twilio-us"))[0] == 404
    assert (await post(client, RINGING, line="nowhere"))[1]["error"] == "unknown_line"
    assert (await post(client, b"{not json"))[1]["error"] == "invalid_json"
    status, body = await post(client, {"events": [RINGING, {**RINGING, "event": "call.x",
                                                            "occurred_at": "yesterday"}]})
    assert status == 422
    assert set(body["fields"]) == {"events.1.event", "events.1.occurred_at"}
    response = await client.post("/cti/hotline/events", data=b"x" * (300 * 1024),
                                 headers=signed(b"x"))
    assert response.status == 413
    response = await client.post("/cti/hotline/events", data=b"{}",
                                 headers={**signed(b"{}"), "Content-Type": "text/plain"})
    assert response.status == 415


async def test_no_agent_api_on_the_pbx_port(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/api/v1/tickets")).status == 404


async def test_metrics_count_events_duplicates_and_time_to_durable(
        client: TestClient[Any, Any]) -> None:
    await post(client, {**RINGING, "call_id": "c-metrics"}, webhook_id="m-1")
    await post(client, {**RINGING, "call_id": "c-metrics"}, webhook_id="m-2")
    text = await (await client.get("/metrics")).text()
    for name in ("intake_telephony_events_total", "intake_telephony_duplicates_total",
                 "intake_telephony_progress_seconds_count"):
        # Each with its line and the service label (in whatever order /metrics writes them).
        assert any(line.startswith(name + "{") and 'line="hotline"' in line
                   and 'service="telephony"' in line for line in text.splitlines()), name
