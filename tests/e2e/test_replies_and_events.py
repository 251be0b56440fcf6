"""The whole gateway running: the event stream follows a form post; a reply goes out once to the
channel's connector and its delivery result shows on the ticket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from intake.bus import Bus
from intake.message import DeliveryResult, Identity, Message, OutboundMessage, Sender, utcnow
from intake.settings import IntakeSettings
from tests.e2e.test_webform_to_ticket import Gateway, find_ticket, running_gateway
from tests.support import eventually


async def read_events(response: aiohttp.ClientResponse, count: int,
                      timeout: float = 20.0) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with asyncio.timeout(timeout):
        while len(events) < count:
            line = (await response.content.readline()).decode().rstrip("\n")
            if not line:
                if "data" in current:
                    events.append(current)
                current = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(": ")
                current[field] = orjson.loads(value) if field == "data" else value
    return events


@pytest.fixture
async def gateway(settings: IntakeSettings,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("INTAKE_TICKET_CORE_REPLY_CHANNELS", "email")
    monkeypatch.setenv("INTAKE_TICKET_CORE_RELAY_POLL_S", "0.2")
    async with running_gateway(settings, monkeypatch) as gw:
        yield gw


async def test_the_event_stream_follows_a_submission_and_resumes_without_gap_or_repeat(
        gateway: Gateway) -> None:
    gw = gateway
    submission = {"name": "王芳", "email": "wang.fang@example.cn", "topic": "enquiry",
                  "subject": "发票", "message": "请开发票", "consent": "on"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gw.api}/api/v1/events", headers=gw.headers()) as stream:
            assert stream.status == 200
            async with http.post(f"{gw.form}/forms/contact/submissions", json=submission,
                                 headers={"Idempotency-Key": "events-1"}) as response:
                assert response.status == 201
            created, posted = await read_events(stream, 2)
        assert (created["event"], posted["event"]) == ("ticket.created", "message.created")
        assert created["data"]["desk"] == "aftersales"

        async with http.post(f"{gw.form}/forms/contact/submissions",
                             json=dict(submission, message="第二次"),
                             headers={"Idempotency-Key": "events-2"}) as response:
            assert response.status == 201
        await find_ticket(http, gw, idempotency_key="webform:contact:events-2")
        async with http.get(f"{gw.api}/api/v1/events",
                            headers={**gw.headers(), "Last-Event-ID": posted["id"]}) as stream:
            resumed = await read_events(stream, 2)
        assert [int(e["id"]) for e in resumed] == [int(posted["id"]) + 1,
                                                   int(posted["id"]) + 2]
        assert [e["event"] for e in resumed] == ["ticket.created", "message.created"]


@contextlib.asynccontextmanager
async def email_connector(settings: IntakeSettings) -> AsyncIterator[tuple[Bus, list[Any]]]:
    """A stand-in for the email connector's sender: takes `intake.outbound.email` messages and
    reports each `sent` (the loopback connector of kernel-kit does this for real)."""
    bus = Bus(settings, "email-test")
    await bus.connect(timeout=15)
    taken: list[OutboundMessage] = []

    async def send(outbound: OutboundMessage) -> None:
        taken.append(outbound)
        result = DeliveryResult(outbound_id=outbound.id, channel=outbound.channel,
                                account=outbound.account, status="sent",
                                provider_message_id=f"<{outbound.id}@test>")
        await bus.publish("delivery", f"{outbound.channel}.{outbound.account}",
                          result.model_dump_json().encode())

    bus.consume("outbound.email", send, OutboundMessage, binding=("outbound", "email.#"))
    try:
        yield bus, taken
    finally:
        await bus.stop_consumers()
        with contextlib.suppress(Exception):
            assert bus._connection is not None
            channel = await bus._connection.channel()
            await channel.queue_delete(bus.names("outbound.email"))
        await bus.close()


async def test_a_reply_goes_out_once_and_its_delivery_result_shows_on_the_ticket(
        gateway: Gateway, settings: IntakeSettings) -> None:
    gw = gateway
    inbound = Message(idempotency_key="email:support@example.com:<m1@customer>",
                      channel="email", account="support@example.com", kind="message",
                      sender=Sender(name="Li Wei", identities=[
                          Identity(kind="email", value="li.wei@example.cn")]),
                      subject="Order 1042", text="Where is my order?", received_at=utcnow())
    async with email_connector(settings) as (bus, taken), aiohttp.ClientSession() as http:
        await asyncio.sleep(0.5)  # its queue is declared and bound
        await bus.publish("inbound", "email.support@example.com",
                          inbound.model_dump_json().encode())
        ticket = await find_ticket(http, gw, idempotency_key=inbound.idempotency_key)

        async with http.post(f"{gw.api}/api/v1/tickets/{ticket['id']}/replies",
                             headers=gw.headers(),
                             json={"text": "It left our warehouse today."}) as response:
            assert response.status == 201, await response.text()
            reply = await response.json()
        assert reply["delivery"]["status"] == "pending"

        async def delivery() -> str | None:
            async with http.get(f"{gw.api}/api/v1/tickets/{ticket['id']}",
                                headers=gw.headers()) as response:
                messages = (await response.json())["messages"]
            out = [m for m in messages if m["direction"] == "out"]
            return out[0]["delivery"]["status"] if out and out[0]["delivery"] else None
        assert await eventually(lambda: _is(delivery, "sent"), timeout=20)

        assert [str(t.id) for t in taken] == [reply["id"]]
        assert taken[0].to == Identity(kind="email", value="li.wei@example.cn")
        assert taken[0].account == "support@example.com"

        # A form ticket: the web form cannot reply, but the example config has an email
        # account, so the reply goes out by email to the address the form gave.
        async with http.post(f"{gw.form}/forms/contact/submissions", json={
                "name": "Anon", "email": "anon@example.cn", "topic": "enquiry",
                "subject": "x", "message": "y", "consent": "on"},
                headers={"Idempotency-Key": "form-by-email"}) as response:
            assert response.status == 201, await response.text()
        form_ticket = await find_ticket(http, gw, idempotency_key="webform:contact:form-by-email")
        async with http.post(f"{gw.api}/api/v1/tickets/{form_ticket['id']}/replies",
                             headers=gw.headers(), json={"text": "Hello"}) as response:
            assert response.status == 201, await response.text()
            form_reply = await response.json()
        assert await eventually(lambda: _taken(taken, form_reply["id"]), timeout=20)
        by_email = next(t for t in taken if str(t.id) == form_reply["id"])
        assert (by_email.channel, by_email.account) == ("email", "support@shop.example")
        assert by_email.to == Identity(kind="email", value="anon@example.cn")


async def _taken(taken: list[Any], outbound_id: str) -> bool:
    return any(str(t.id) == outbound_id for t in taken)


async def _is(probe: Any, expected: str) -> bool:
    return await probe() == expected
