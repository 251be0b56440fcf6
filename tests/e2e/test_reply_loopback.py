"""A reply end to end through a real connector service: the loopback channel's sender.

Ticket core, router, web form and the loopback connector (tests/loopback, the `api` channel)
run in this process on the real broker; the connector is built by the kernel from its Channel
declaration, so its sender runs in the kernel's SenderRunner with its sent-ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from intake.cli import load_config
from intake.message import Identity, Message, Sender, utcnow
from intake.service import serve
from intake.settings import IntakeSettings
from tests.e2e.test_webform_to_ticket import Gateway, find_ticket, free_port, running_gateway
from tests.loopback import CHANNEL as LOOPBACK
from tests.support import eventually


@contextlib.asynccontextmanager
async def loopback_connector(settings: IntakeSettings) -> AsyncIterator[str]:
    """The loopback connector as its own service (as `intake run api` would run it)."""
    doc = load_config(settings)
    service = LOOPBACK.build_service(settings, doc)
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(serve([service], stop=stop, started=lambda _: started.set()))
    await asyncio.wait_for(started.wait(), 30)
    url = f"http://127.0.0.1:{service.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async def ready() -> bool:
                async with http.get(f"{url}/readyz") as response:
                    body = await response.json()
                return "consumer:outbound.api" in str(body) and response.status == 200
            await eventually(ready, timeout=30)
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


@pytest.fixture
async def gateway(settings: IntakeSettings, monkeypatch: pytest.MonkeyPatch,
                  tmp_path: Path) -> AsyncIterator[tuple[Gateway, Path]]:
    sink = tmp_path / "sink.jsonl"
    monkeypatch.setenv("INTAKE_TICKET_CORE_REPLY_CHANNELS", "api,email")
    monkeypatch.setenv("INTAKE_TICKET_CORE_RELAY_POLL_S", "0.2")
    monkeypatch.setenv("INTAKE_API_SINK_PATH", str(sink))
    monkeypatch.setenv("INTAKE_API_PORT", str(free_port()))
    async with running_gateway(settings, monkeypatch) as gw:
        async with loopback_connector(gw.settings):
            yield gw, sink


def inbound(channel: str, account: str, identity: Identity, key: str) -> Message:
    return Message(idempotency_key=f"{channel}:{account}:{key}", channel=channel,
                   account=account, kind="message",
                   sender=Sender(name="Li Wei", identities=[identity]),
                   subject="Order 1042", text="Where is my order?", received_at=utcnow())


async def post_inbound(gw: Gateway, message: Message) -> None:
    from intake.bus import Bus

    bus = Bus(gw.settings, "e2e-source")
    await bus.connect(timeout=15)
    try:
        await bus.publish("inbound", f"{message.channel}.{message.account}",
                          message.model_dump_json().encode())
    finally:
        await bus.close()


async def delivery_of(http: aiohttp.ClientSession, gw: Gateway, ticket_id: str,
                      reply_id: str) -> dict[str, Any] | None:
    async with http.get(f"{gw.api}/api/v1/tickets/{ticket_id}",
                        headers=gw.headers()) as response:
        messages = (await response.json())["messages"]
    [reply] = [m for m in messages if m["id"] == reply_id]
    delivery: dict[str, Any] | None = reply.get("delivery")
    return delivery


def sent_lines(sink: Path) -> list[dict[str, Any]]:
    if not sink.exists():
        return []
    return [json.loads(line) for line in sink.read_text(encoding="utf-8").splitlines()]


async def test_a_reply_is_sent_once_by_the_connector_and_shows_sent_on_the_ticket(
        gateway: tuple[Gateway, Path]) -> None:
    gw, sink = gateway
    message = inbound("api", "crm", Identity(kind="api_user", value="crm:42", verified=True),
                      "order-1042")
    await post_inbound(gw, message)
    async with aiohttp.ClientSession() as http:
        ticket = await find_ticket(http, gw, idempotency_key=message.idempotency_key)
        async with http.post(f"{gw.api}/api/v1/tickets/{ticket['id']}/replies",
                             headers=gw.headers(),
                             json={"text": "It left our warehouse today."}) as response:
            assert response.status == 201, await response.text()
            reply = await response.json()
        assert reply["direction"] == "out" and reply["kind"] == "reply"
        assert reply["delivery"]["status"] == "pending"

        async def sent() -> bool:
            delivery = await delivery_of(http, gw, ticket["id"], reply["id"])
            return delivery is not None and delivery["status"] == "sent"
        assert await eventually(sent, timeout=30)

        # The reply, once (the example's `ack` auto reply to this after-sales ticket goes too).
        lines = [line for line in sent_lines(sink) if line["outbound_id"] == reply["id"]]
        assert len(lines) == 1
        assert lines[0]["to"] == "crm:42" and lines[0]["text"] == "It left our warehouse today."


async def test_a_reply_on_a_channel_no_connector_serves_is_failed_no_connector(
        gateway: tuple[Gateway, Path]) -> None:
    # `email` may reply (INTAKE_TICKET_CORE_REPLY_CHANNELS), but no email connector runs:
    # the broker returns the relay's mandatory publish.
    gw, sink = gateway
    message = inbound("email", "support@example.com",
                      Identity(kind="email", value="li.wei@example.cn"), "<m1@customer>")
    await post_inbound(gw, message)
    async with aiohttp.ClientSession() as http:
        ticket = await find_ticket(http, gw, idempotency_key=message.idempotency_key)
        async with http.post(f"{gw.api}/api/v1/tickets/{ticket['id']}/replies",
                             headers=gw.headers(), json={"text": "Hello"}) as response:
            assert response.status == 201, await response.text()
            reply = await response.json()

        async def failed() -> dict[str, Any] | None:
            delivery = await delivery_of(http, gw, ticket["id"], reply["id"])
            return delivery if delivery and delivery["status"] == "failed" else None
        delivery = await eventually(failed, timeout=30)
        assert delivery["reason"] == "no_connector"
    assert sent_lines(sink) == []
