"""The whole path with every service running: a form post becomes a routed, persisted ticket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from intake.cli import load_config, service_builders
from intake.message import Form
from intake.service import serve
from intake.settings import IntakeSettings
from tests.conftest import delete_topology
from tests.factories import form_message
from tests.support import eventually


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


@pytest.fixture
async def gateway(settings: IntakeSettings, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    ports = {name: free_port() for name in ("TICKET_CORE", "ROUTER", "WEBFORM")}
    for name, port in ports.items():
        monkeypatch.setenv(f"INTAKE_{name}_PORT", str(port))
    monkeypatch.setenv("INTAKE_WEBFORM_PUBLIC_URL", f"http://127.0.0.1:{ports['WEBFORM']}")
    settings = settings.model_copy(update={"api_token": None})
    doc = load_config(settings)
    builders = service_builders()
    services = [builders[name](settings, doc) for name in ("ticket-core", "router", "webform")]
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(serve(services, stop=stop, started=lambda _: started.set()))
    await asyncio.wait_for(started.wait(), 30)
    gw = Gateway(api=f"http://127.0.0.1:{ports['TICKET_CORE']}",
                 form=f"http://127.0.0.1:{ports['WEBFORM']}",
                 router=f"http://127.0.0.1:{ports['ROUTER']}",
                 token=(tmp_path / "api-token").read_text().strip(), settings=settings)
    async with aiohttp.ClientSession() as http:
        for base in (gw.api, gw.router, gw.form):
            async def ready(base: str = base) -> bool:
                async with http.get(f"{base}/readyz") as response:
                    return response.status == 200
            await eventually(ready, timeout=30)
    yield gw
    stop.set()
    await asyncio.wait_for(task, 60)
    from intake.bus import Bus

    cleanup = Bus(settings, "cleanup")
    await cleanup.connect()
    await delete_topology(cleanup)
    await cleanup.close()


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
        assert ticket["desk"] == "aftersales"  # the complaints route
        assert ticket["priority"] == "high"
        assert ticket["route"]["route"] == "complaints"
        assert ticket["channel"] == "webform"

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
        assert ticket2["desk"] == "general"  # the default route

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
        assert decision["deliveries"][0]["desk"] == "aftersales"
