"""The whole path with every service running: a form post becomes a routed, persisted ticket."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from intake.bus import Bus
from intake.cli import load_config, service_builders
from intake.message import Form
from intake.service import serve
from intake.settings import IntakeSettings
from tests.conftest import delete_topology
from tests.factories import form_message
from tests.support import BrokerProxy, eventually


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Gateway:
    api: str
    form: str
    token: str
    router: str
    settings: IntakeSettings

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextlib.asynccontextmanager
async def running_gateway(settings: IntakeSettings, monkeypatch: pytest.MonkeyPatch,
                          webform_amqp_url: str | None = None) -> AsyncIterator[Gateway]:
    """Ticket core, router and web form in this process, on free ports, until the block ends."""
    ports = {name: free_port() for name in ("TICKET_CORE", "ROUTER", "WEBFORM")}
    for name, port in ports.items():
        monkeypatch.setenv(f"INTAKE_{name}_PORT", str(port))
    monkeypatch.setenv("INTAKE_WEBFORM_PUBLIC_URL", f"http://127.0.0.1:{ports['WEBFORM']}")
    # Every request comes from 127.0.0.1 here; the rate limit has its own tests.
    monkeypatch.setenv("INTAKE_WEBFORM_RATE_LIMIT_BURST", "1000")
    settings = settings.model_copy(update={"api_token": None})
    doc = load_config(settings)
    builders = service_builders()
    webform_settings = (settings.model_copy(update={"amqp_url": webform_amqp_url})
                        if webform_amqp_url else settings)
    services = [builders["ticket-core"](settings, doc), builders["router"](settings, doc),
                builders["webform"](webform_settings, doc)]
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(serve(services, stop=stop, started=lambda _: started.set()))
    await asyncio.wait_for(started.wait(), 30)
    gw = Gateway(api=f"http://127.0.0.1:{ports['TICKET_CORE']}",
                 form=f"http://127.0.0.1:{ports['WEBFORM']}",
                 router=f"http://127.0.0.1:{ports['ROUTER']}",
                 token=(settings.data_dir / "api-token").read_text().strip(), settings=settings)
    try:
        async with aiohttp.ClientSession() as http:
            for base in (gw.api, gw.router, gw.form):
                async def ready(base: str = base) -> bool:
                    async with http.get(f"{base}/readyz") as response:
                        return response.status == 200
                await eventually(ready, timeout=30)
        yield gw
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        cleanup = Bus(settings, "cleanup")
        await cleanup.connect()
        await delete_topology(cleanup)
        await cleanup.close()


# The example's rules with a lookup bound for a machine shared with other sessions: the ticket
# core answers the router's lookup on the same event loop, which can take over the example's
# 50 ms there (and the test would read `timeout`). The bound itself: router/tests/test_lookup.py.
SHARED_MACHINE_LOOKUP = "options:\n  customer_lookup: {timeout: 2s}\n"


@pytest.fixture
async def gateway(settings: IntakeSettings,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    rules = settings.data_dir / "lookup-options.yaml"
    rules.write_text(SHARED_MACHINE_LOOKUP, encoding="utf-8")
    async with running_gateway(settings.model_copy(update={"rules": rules}),
                               monkeypatch) as gw:
        yield gw


async def find_ticket(http: aiohttp.ClientSession, gw: Gateway, **query: str) -> dict:
    async def lookup() -> dict | None:
        async with http.get(f"{gw.api}/api/v1/tickets", params=query,
                            headers=gw.headers()) as response:
            assert response.status == 200, await response.text()
            items = (await response.json())["items"]
            return items[0] if items else None

    return await eventually(lookup, timeout=20)


async def test_form_post_becomes_a_routed_persisted_ticket(gateway: Gateway) -> None:
    gw = gateway
    async with aiohttp.ClientSession() as http:
        submission = {"name": "王芳", "email": "Wang.Fang@Example.CN", "phone": "138 0013 8000",
                      "topic": "complaint", "subject": "快递损坏",
                      "message": "收到的包裹破了，商品有划痕。", "consent": "on"}
        async with http.post(f"{gw.form}/forms/contact/submissions", json=submission,
                             headers={"Idempotency-Key": "e2e-1"}) as response:
            assert response.status == 201, await response.text()
            receipt = await response.json()

        # The reference on the customer's confirmation resolves to the ticket.
        ticket = await find_ticket(http, gw, reference=receipt["reference"])
        assert ticket["desk"] == "complaints"  # the complaints route
        assert ticket["priority"] == "high"
        assert ticket["route"]["route"] == "complaints"
        assert ticket["channel"] == "webform"
        # The example's rules read customer.* only in the `vip` route, after the complaint
        # routes: a complaint is decided without asking the ticket core.
        assert ticket["route"]["customer"]["lookup"] == "skipped"

        async with http.get(f"{gw.api}/api/v1/tickets/{ticket['id']}",
                            headers=gw.headers()) as response:
            detail = await response.json()
        [message] = detail["messages"]
        assert message["idempotency_key"] == "webform:contact:e2e-1"
        assert "包裹破了" in message["text"]
        assert message["persisted_at"] >= message["received_at"]

        async with http.get(f"{gw.api}/api/v1/customers/{ticket['customer_id']}",
                            headers=gw.headers()) as response:
            customer = await response.json()
        identities = {(i["kind"], i["value"]) for i in customer["identities"]}
        assert ("email", "wang.fang@example.cn") in identities
        assert ("phone", "+8613800138000") in identities

        # A second submission from the same address lands on the same customer, new ticket.
        second = dict(submission, topic="enquiry", subject="发票", message="请开发票")
        async with http.post(f"{gw.form}/forms/contact/submissions", json=second,
                             headers={"Idempotency-Key": "e2e-2"}) as response:
            assert response.status == 201
            receipt2 = await response.json()
        ticket2 = await find_ticket(http, gw, reference=receipt2["reference"])
        assert ticket2["customer_id"] == ticket["customer_id"]
        assert ticket2["id"] != ticket["id"]
        assert ticket2["desk"] == "aftersales"  # the default route
        # It reached the `vip` route: the router asked the ticket core, which knows the sender
        # from the first ticket (an unreachable ticket core would say `error`), VIP level 0.
        assert ticket2["route"]["customer"]["lookup"] == "hit"
        assert ticket2["route"]["customer"]["id"] == ticket["customer_id"]

        # Looked up by the email alone (another cache entry than email and phone): known too.
        third = {k: v for k, v in second.items() if k != "phone"}
        async with http.post(f"{gw.form}/forms/contact/submissions", json=third,
                             headers={"Idempotency-Key": "e2e-3"}) as response:
            assert response.status == 201, await response.text()
            receipt3 = await response.json()
        ticket3 = await find_ticket(http, gw, reference=receipt3["reference"])
        assert ticket3["route"]["customer"]["lookup"] == "hit"
        assert ticket3["route"]["customer"]["id"] == ticket["customer_id"]

        # A retried submission (same Idempotency-Key) is the same message, stored once.
        async with http.post(f"{gw.form}/forms/contact/submissions", json=submission,
                             headers={"Idempotency-Key": "e2e-1"}) as response:
            assert response.status == 201
            assert (await response.json())["reference"] == receipt["reference"]
        await asyncio.sleep(0.5)
        async with http.get(f"{gw.api}/api/v1/tickets",
                            params={"idempotency_key": "webform:contact:e2e-1"},
                            headers=gw.headers()) as response:
            assert len((await response.json())["items"]) == 1
        async with http.get(f"{gw.api}/api/v1/tickets/{ticket['id']}",
                            headers=gw.headers()) as response:
            assert len((await response.json())["messages"]) == 1


async def test_router_explains_a_decision(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.router}/rules") as response:
            rules = await response.json()
            assert response.status == 200
        assert rules["revision"]
        message = form_message("x")
        message.form = Form(form_id="contact", fields={"topic": "complaint"})
        async with http.post(f"{gateway.router}/explain",
                             data=message.model_dump_json(),
                             headers={"Content-Type": "application/json"}) as response:
            decision = await response.json()
            assert response.status == 200, decision
        assert decision["route"] == "complaints"
        assert decision["deliveries"][0]["desk"] == "complaints"


async def test_submissions_made_while_the_broker_is_away_become_tickets_once_in_order(
        settings: IntakeSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = BrokerProxy()
    await proxy.reserve_port()  # the web form's broker refuses connections
    async with running_gateway(settings, monkeypatch, webform_amqp_url=proxy.url) as gw:
        async with aiohttp.ClientSession() as http:
            keys = [f"outage-{i:02d}" for i in range(15)]
            for i, key in enumerate(keys):
                body = {"name": "Chen Jing", "email": "chen.jing@example.cn",
                        "topic": "enquiry", "message": f"question {i}", "consent": True}
                async with http.post(f"{gw.form}/forms/contact/submissions", json=body,
                                     headers={"Idempotency-Key": key}) as response:
                    assert response.status == 201, await response.text()
            async with http.get(f"{gw.form}/readyz") as response:
                readiness = await response.json()
            assert response.status == 200
            assert readiness["broker"] == "down" and readiness["outbox_depth"] == 15
            async with http.get(f"{gw.api}/api/v1/tickets", headers=gw.headers()) as response:
                assert (await response.json())["items"] == []

            await proxy.start()  # the broker is reachable again: the outbox drains

            async def all_persisted() -> list[dict] | None:
                async with http.get(f"{gw.api}/api/v1/tickets", params={"limit": "100"},
                                    headers=gw.headers()) as response:
                    items = (await response.json())["items"]
                return items if len(items) >= len(keys) else None

            tickets = await eventually(all_persisted, timeout=30)
            await asyncio.sleep(0.5)  # anything doubled would show up now
            async with http.get(f"{gw.api}/api/v1/tickets", params={"limit": "100"},
                                headers=gw.headers()) as response:
                tickets = (await response.json())["items"]
            assert len(tickets) == len(keys)
            by_number = sorted(tickets, key=lambda t: t["number"])
            texts = []
            for ticket in by_number:
                async with http.get(f"{gw.api}/api/v1/tickets/{ticket['id']}",
                                    headers=gw.headers()) as response:
                    [message] = (await response.json())["messages"]
                texts.append(message["idempotency_key"])
            assert texts == [f"webform:contact:{key}" for key in keys]
            async with http.get(f"{gw.form}/readyz") as response:
                readiness = await response.json()
            assert readiness["broker"] == "up" and readiness["outbox_depth"] == 0
    await proxy.stop()


async def test_a_redelivered_message_is_stored_once(gateway: Gateway) -> None:
    bus = Bus(gateway.settings, "redeliver")
    await bus.connect()
    try:
        message = form_message("twice")
        body = message.model_dump_json().encode()
        for _ in range(3):  # a connector retrying, or the broker redelivering
            await bus.publish("inbound", message.routing_key, body)
        async with aiohttp.ClientSession() as http:
            ticket = await find_ticket(http, gateway, idempotency_key=message.idempotency_key)
            await asyncio.sleep(0.5)
            async with http.get(f"{gateway.api}/api/v1/tickets",
                                params={"customer_id": ticket["customer_id"]},
                                headers=gateway.headers()) as response:
                assert len((await response.json())["items"]) == 1
            async with http.get(f"{gateway.api}/api/v1/tickets/{ticket['id']}",
                                headers=gateway.headers()) as response:
                assert len((await response.json())["messages"]) == 1
    finally:
        await bus.close()
