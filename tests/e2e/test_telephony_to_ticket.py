"""The whole telephony path: signed webhooks on the PBX port → progress → the pop on the event
stream → a pick → the record (and its recording) on the picked ticket."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from connectors.telephony.inbound.generic import sign
from intake.bus import Bus
from intake.cli import load_config, service_builders
from intake.service import serve
from intake.settings import IntakeSettings
from tests.conftest import delete_topology
from tests.e2e.test_replies_and_events import read_events
from tests.e2e.test_webform_to_ticket import find_ticket, free_port
from tests.support import BrokerProxy, eventually

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "intake.example.yaml"
SECRET = "whsec_aW50YWtlLWhvdGxpbmUtdGVzdC1zZWNyZXQtMDAx"  # the example's test value
AUDIO = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(64)


@dataclass
class PhoneGateway:
    api: str
    pbx: str
    recordings: str
    token: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextlib.asynccontextmanager
async def running(settings: IntakeSettings, monkeypatch: pytest.MonkeyPatch,
                  tmp_path: Path, telephony_amqp_url: str | None = None,
                  ) -> AsyncIterator[PhoneGateway]:
    ports = {name: free_port() for name in ("TICKET_CORE", "ROUTER", "TELEPHONY", "AUDIO")}
    for name in ("TICKET_CORE", "ROUTER", "TELEPHONY"):
        monkeypatch.setenv(f"INTAKE_{name}_PORT", str(ports[name]))
    monkeypatch.setenv("INTAKE_TELEPHONY_TICK_S", "0.05")
    recordings = f"http://127.0.0.1:{ports['AUDIO']}/"
    config = tmp_path / "intake.yaml"
    config.write_text(EXAMPLE.read_text(encoding="utf-8").replace(
        "http://127.0.0.1:18090/", recordings), encoding="utf-8")
    settings = settings.model_copy(update={"api_token": None, "config": config})
    doc = load_config(settings)
    builders = service_builders()
    services = [builders["ticket-core"](settings, doc), builders["router"](settings, doc),
                builders["telephony"](settings.model_copy(update={
                    "amqp_url": telephony_amqp_url or settings.amqp_url}), doc)]

    async def audio(request: web.Request) -> web.Response:
        return web.Response(body=AUDIO, content_type="audio/wav")

    audio_app = web.Application()
    audio_app.router.add_get("/{name}", audio)
    audio_runner = web.AppRunner(audio_app)
    await audio_runner.setup()
    await web.TCPSite(audio_runner, "127.0.0.1", ports["AUDIO"]).start()
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(serve(services, stop=stop, started=lambda _: started.set()))
    await asyncio.wait_for(started.wait(), 30)
    gw = PhoneGateway(api=f"http://127.0.0.1:{ports['TICKET_CORE']}",
                      pbx=f"http://127.0.0.1:{ports['TELEPHONY']}", recordings=recordings,
                      token=(settings.data_dir / "api-token").read_text().strip())
    try:
        async with aiohttp.ClientSession() as http:
            for base in (gw.api, gw.pbx):
                async def ready(base: str = base) -> bool:
                    async with http.get(f"{base}/readyz") as response:
                        return response.status == 200
                await eventually(ready, timeout=30)
        yield gw
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await audio_runner.cleanup()
        cleanup = Bus(settings, "cleanup")
        await cleanup.connect()
        await delete_topology(cleanup)
        await cleanup.close()


async def post_event(http: aiohttp.ClientSession, gw: PhoneGateway, event: dict[str, Any],
                     webhook_id: str) -> dict[str, Any]:
    body = orjson.dumps(event)
    stamp = int(time.time())
    async with http.post(f"{gw.pbx}/cti/hotline/events", data=body, headers={
            "Content-Type": "application/json", "webhook-id": webhook_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(SECRET, webhook_id, stamp, body)}) as response:
        assert response.status == 202, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


def event(kind: str, call_id: str, at: str, **fields: Any) -> dict[str, Any]:
    return {"event": f"call.{kind}", "call_id": call_id,
            "occurred_at": f"2026-12-05T09:{at}+08:00", "from": "013800138000",
            "to": "400-800-1234", **fields}


async def test_a_missed_call_is_a_callback_and_a_picked_call_lands_on_its_ticket(
        settings: IntakeSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async with running(settings, monkeypatch, tmp_path) as gw, aiohttp.ClientSession() as http:
        # 1. A missed call: a callback ticket, priority high, at once.
        await post_event(http, gw, event("ringing", "m-1", "00:00", caller_name="王小明"), "w1")
        await post_event(http, gw, event("missed", "m-1", "00:30"), "w2")
        callback = await find_ticket(http, gw, idempotency_key="telephony:hotline:m-1:record")
        assert (callback["priority"], callback["channel"]) == ("high", "telephony")

        # 2. The next call pops the customer with that ticket, to the ringing agent.
        async with http.get(f"{gw.api}/api/v1/events?types=call.ringing&agent=1001",
                            headers=gw.headers()) as stream:
            await post_event(http, gw, event("ringing", "c-2", "10:00",
                                             agents=["1001", "1002"]), "w3")
            [pop] = await read_events(stream, 1)
        data = pop["data"]["data"]
        assert data["caller"]["number"] == "+8613800138000"
        assert data["lookup"] == "found"
        assert [t["id"] for t in data["open_tickets"]] == [callback["id"]]

        # 3. The agent picks it; the record and its recording land there.
        async with http.post(f"{gw.api}/api/v1/calls/c-2/pick", headers=gw.headers(),
                             json={"ticket_id": callback["id"]}) as response:
            assert response.status == 200, await response.text()
        await post_event(http, gw, event("answered", "c-2", "10:08", agent="1001"), "w4")
        await post_event(http, gw, event("ended", "c-2", "12:08",
                                         recording_url=gw.recordings + "c-2.wav"), "w5")
        assert await post_event(http, gw, event("ended", "c-2", "12:08",
                                                recording_url=gw.recordings + "c-2.wav"),
                                "w5") == {"accepted": 0, "duplicates": 1}

        async def recorded() -> dict[str, Any] | None:
            async with http.get(f"{gw.api}/api/v1/tickets/{callback['id']}",
                                headers=gw.headers()) as response:
                ticket: dict[str, Any] = await response.json()
            calls = [m for m in ticket["messages"] if m["kind"] == "call"]
            return ticket if len(calls) == 2 else None

        ticket = await eventually(recorded, timeout=20)
        record = [m for m in ticket["messages"] if m["kind"] == "call"][-1]  # not the ack
        assert record["call"]["state"] == "completed"
        assert record["call"]["agent"] == "1001" and record["call"]["talk_s"] == 120.0
        assert [a["size"] for a in record["attachments"]] == [len(AUDIO)]
        async with http.get(f"{gw.api}/api/v1/calls/c-2", headers=gw.headers()) as response:
            call = await response.json()
        assert (call["state"], call["ticket_id"]) == ("completed", callback["id"])
        # Progress never became a ticket message.
        async with http.get(f"{gw.api}/api/v1/tickets", headers=gw.headers(),
                            params={"channel": "telephony"}) as response:
            assert len((await response.json())["items"]) == 1


async def test_webhooks_are_accepted_from_the_outbox_while_the_broker_is_away(
        settings: IntakeSettings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    proxy = BrokerProxy()
    await proxy.reserve_port()  # the telephony connector's broker refuses connections
    async with running(settings, monkeypatch, tmp_path, proxy.url) as gw, \
            aiohttp.ClientSession() as http:
        for kind, at, extra in (("ringing", "20:00", {}), ("answered", "20:05", {"agent": "1001"}),
                                ("ended", "21:05", {})):
            answer = await post_event(http, gw, event(kind, "o-1", at, **extra), f"o-{kind}")
            assert answer == {"accepted": 1, "duplicates": 0}
        async with http.get(f"{gw.pbx}/readyz") as response:
            assert response.status == 200  # it still accepts durably
            ready = await response.json()
        assert ready["broker"] == "down" and ready["outbox_depth"] >= 1
        assert ready["lines"]["hotline"]["state"] == "listening"
        # No PBX listens on the lab lines' ports: they back off and degrade nothing else.
        assert ready["lines"]["asterisk-lab"]["state"] in ("connecting", "backing_off")
        assert ready["lines"]["freeswitch-lab"]["state"] in ("connecting", "backing_off")
        await asyncio.sleep(2.5)  # the record settles and goes to the outbox too
        await proxy.start()
        try:
            record = await find_ticket(http, gw, idempotency_key="telephony:hotline:o-1:record")
            async with http.get(f"{gw.api}/api/v1/calls/o-1", headers=gw.headers()) as response:
                call = await response.json()
            assert (call["state"], call["ticket_id"]) == ("completed", record["id"])
        finally:
            await proxy.stop()
