"""The SDK channel end to end on the real broker: a signed user's ticket reaches the ticket
core (found by its SDK- reference), an agent's reply reaches the user's socket, and a status
change shows in the app.

Ticket core, router and the SDK connector run in this process, each built by the kernel as
`intake run` builds it (the SDK's sender, its ticket-events consumer and its sockets included).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from connectors.sdk import CHANNEL as SDK
from connectors.sdk.inbound.identity import user_hash
from intake.cli import load_config
from intake.service import serve
from intake.settings import IntakeSettings
from tests.e2e.test_webform_to_ticket import Gateway, free_port, running_gateway
from tests.integration.test_sdk_replicas import delete_sdk_topology
from tests.support import eventually

SECRET = "demo-app-identity-secret-for-tests-only-7f3a9c"


@contextlib.asynccontextmanager
async def sdk_connector(settings: IntakeSettings) -> AsyncIterator[str]:
    service = SDK.build_service(settings, load_config(settings))
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(serve([service], stop=stop, started=lambda _: started.set()))
    await asyncio.wait_for(started.wait(), 30)
    url = f"http://127.0.0.1:{service.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async def ready() -> bool:
                async with http.get(f"{url}/readyz") as response:
                    body = await response.text()
                return (response.status == 200 and "consumer:outbound.sdk" in body
                        and "consumer:sdk.events" in body)
            await eventually(ready, timeout=30)
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await delete_sdk_topology(settings)


@pytest.fixture
async def gateway(settings: IntakeSettings, monkeypatch: pytest.MonkeyPatch
                  ) -> AsyncIterator[tuple[Gateway, str]]:
    monkeypatch.setenv("INTAKE_TICKET_CORE_REPLY_CHANNELS", "sdk")
    monkeypatch.setenv("INTAKE_TICKET_CORE_RELAY_POLL_S", "0.2")
    monkeypatch.setenv("INTAKE_SDK_PORT", str(free_port()))
    async with running_gateway(settings, monkeypatch) as gw, sdk_connector(gw.settings) as sdk:
        yield gw, sdk


async def frame_of(ws: aiohttp.ClientWebSocketResponse, kind: str,
                   timeout: float = 15) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive()
            assert message.type == aiohttp.WSMsgType.TEXT, message
            frame: dict[str, Any] = json.loads(message.data)
            if frame["type"] == kind:
                return frame


async def streamed_events(http: aiohttp.ClientSession, gw: Gateway, types: str,
                          count: int) -> list[dict[str, Any]]:
    """The first `count` envelopes of the ticket core's event stream from the log's start."""
    events: list[dict[str, Any]] = []
    async with http.get(f"{gw.api}/api/v1/events", headers=gw.headers(),
                        params={"types": types, "last_event_id": "0"}) as response:
        assert response.status == 200, await response.text()
        async with asyncio.timeout(15):
            async for line in response.content:
                if line.startswith(b"data: "):
                    events.append(json.loads(line[6:]))
                    if len(events) == count:
                        return events
    return events


async def test_ticket_reply_and_status_travel_between_app_and_agent(
        gateway: tuple[Gateway, str]) -> None:
    gw, sdk = gateway
    base = f"{sdk}/sdk/v1/apps/demo-app"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/sessions", json={
                "user": {"id": "u-1001", "name": "李雷"},
                "user_hash": user_hash(SECRET, "u-1001")}) as response:
            assert response.status == 201, await response.text()
            token = (await response.json())["session_token"]
        auth = {"Authorization": f"Bearer {token}"}
        ws = await http.ws_connect(f"{base}/ws")
        await ws.send_json({"type": "hello", "session_token": token})
        await frame_of(ws, "synced")

        async with http.post(f"{base}/tickets", headers=auth, json={
                "client_msg_id": "t-1", "subject": "退货", "text": "耳机想退货",
                "fields": {"category": "售后"}}) as response:
            assert response.status == 201, await response.text()
            ticket = await response.json()

        async def core_ticket() -> dict[str, Any] | None:
            async with http.get(f"{gw.api}/api/v1/tickets",
                                params={"reference": ticket["reference"]},
                                headers=gw.headers()) as found:
                items = (await found.json())["items"]
            return items[0] if items else None
        assert await eventually(core_ticket, timeout=30)
        core = await core_ticket()
        assert core is not None and core["channel"] == "sdk"
        async with http.get(f"{gw.api}/api/v1/tickets/{core['id']}",
                            headers=gw.headers()) as found:
            # Inbound: the example's `ack` auto reply is an outgoing message beside it.
            [first] = [m for m in (await found.json())["messages"] if m["direction"] == "in"]
        assert first["channel_data"]["reference"] == ticket["reference"]
        assert first["channel_data"]["user"] == {"id": "u-1001", "kind": "user",
                                                 "verified": True}

        updated = await frame_of(ws, "ticket.updated")  # numbered once stored
        assert updated["ticket"]["number"] == core["number"]

        async with http.post(f"{gw.api}/api/v1/tickets/{core['id']}/replies",
                             headers=gw.headers(), json={"text": "您好，已为您退款"}) as response:
            assert response.status == 201, await response.text()
            reply = await response.json()
        pushed = await frame_of(ws, "message.created")
        assert pushed["ticket_id"] == ticket["id"]
        assert pushed["message"]["text"] == "您好，已为您退款"

        async def delivery(expected: str) -> bool:
            async with http.get(f"{gw.api}/api/v1/tickets/{core['id']}",
                                headers=gw.headers()) as found:
                messages = (await found.json())["messages"]
            [out] = [m for m in messages if m["id"] == reply["id"]]
            return bool(out["delivery"]["status"] == expected)
        assert await eventually(lambda: delivery("delivered"), timeout=15)
        async with http.post(f"{base}/tickets/{ticket['id']}/read", headers=auth,
                             json={"seq": pushed["seq"]}) as response:
            assert response.status == 200
        assert await eventually(lambda: delivery("read"), timeout=15)

        async with http.patch(f"{gw.api}/api/v1/tickets/{core['id']}", headers=gw.headers(),
                              # The example's aftersales desk needs its resolution code.
                              json={"status": "resolved",
                                    "fields": {"resolution_code": "explained"}}) as response:
            assert response.status == 200, await response.text()
        while (changed := await frame_of(ws, "ticket.updated"))["ticket"]["status"] != (
                "resolved"):
            pass
        assert changed["ticket_id"] == ticket["id"]

        async with http.post(f"{base}/tickets/{ticket['id']}/satisfaction", headers=auth,
                             json={"score": 5, "comment": "很满意"}) as response:
            assert response.status == 201, await response.text()

        async def rated() -> dict[str, Any] | None:
            async with http.get(f"{gw.api}/api/v1/tickets/{core['id']}",
                                headers=gw.headers()) as found:
                satisfaction: dict[str, Any] | None = (await found.json())["satisfaction"]
            return satisfaction
        assert await eventually(rated, timeout=30)
        first = await rated()
        assert first is not None
        assert (first["score"], first["comment"], first["via"]) == (5, "很满意", "sdk")
        async with http.post(f"{base}/tickets/{ticket['id']}/satisfaction", headers=auth,
                             json={"score": 3, "comment": "其实一般"}) as response:
            assert response.status == 201, await response.text()

        async def changed_rating() -> dict[str, Any] | None:
            latest = await rated()
            return latest if latest and latest["score"] == 3 else None
        assert await eventually(changed_rating, timeout=30)
        latest = await changed_rating()
        assert latest is not None and latest["first_answered_at"] == first["answered_at"]
        events = await streamed_events(http, gw, "satisfaction.answered", count=2)
        assert [(e["ticket_id"], e["data"]["score"]) for e in events] == [
            (core["id"], 5), (core["id"], 3)]
        async with http.get(f"{base}/tickets", headers=auth) as response:
            [mine] = (await response.json())["items"]
        assert (mine["status"], mine["number"]) == ("resolved", core["number"])
        await ws.close()
