"""Two replicas of the SDK connector on the real broker and one state store: a user's socket
on one replica sees, at once, what the user's other device posted through the other one
(the `intake.sdk.fanout` exchange), and the agent's reply handled by either."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from connectors.sdk import CHANNEL
from connectors.sdk.inbound.identity import user_hash
from intake.bus import Bus
from intake.cli import load_config
from intake.service import serve
from intake.settings import IntakeSettings
from tests.conftest import delete_topology
from tests.support import eventually

SECRET = "demo-app-identity-secret-for-tests-only-7f3a9c"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def replica(settings: IntakeSettings, monkeypatch: pytest.MonkeyPatch,
                  port: int | None = None) -> AsyncIterator[str]:
    port = port or free_port()
    monkeypatch.setenv("INTAKE_SDK_PORT", str(port))
    # Replicas share the data dir (one state store) but each has its own outbox.
    settings = settings.model_copy(update={"instance_id": f"replica-{port}"})
    service = CHANNEL.build_service(settings, load_config(settings))
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve([service], stop=stop, started=lambda _: started.set()))
    await asyncio.wait_for(started.wait(), 30)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async def ready() -> bool:
                async with http.get(f"{url}/readyz") as response:
                    return response.status == 200 and "sdk.fanout" in await response.text()
            await eventually(ready, timeout=30)
        yield url
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def test_a_socket_on_one_replica_sees_what_another_replica_took(
        settings: IntakeSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    async with replica(settings, monkeypatch) as first, replica(settings, monkeypatch) as second:
        async with aiohttp.ClientSession() as http:
            tokens = []
            for url in (first, second):
                async with http.post(f"{url}/sdk/v1/apps/demo-app/sessions", json={
                        "user": {"id": "u-r"}, "user_hash": user_hash(SECRET, "u-r")}) as r:
                    assert r.status == 201, await r.text()
                    tokens.append((await r.json())["session_token"])
            ws = await http.ws_connect(f"{first}/sdk/v1/apps/demo-app/ws")
            await ws.send_json({"type": "hello", "session_token": tokens[0]})
            frames: list[dict[str, Any]] = []
            while not frames or frames[-1]["type"] != "synced":
                frames.append(json.loads((await ws.receive(timeout=10)).data))
            async with http.post(f"{second}/sdk/v1/apps/demo-app/messages",
                                 headers={"Authorization": f"Bearer {tokens[1]}"},
                                 json={"client_msg_id": "other-device",
                                       "text": "从另一台设备"}) as r:
                assert r.status == 201, await r.text()
            # Well before the sockets' 10 s safety poll: the fan-out woke it.
            frame = json.loads((await ws.receive(timeout=3)).data)
            assert frame["type"] == "message.created"
            assert frame["message"]["text"] == "从另一台设备"
            await ws.close()
    await delete_sdk_topology(settings)


async def delete_sdk_topology(settings: IntakeSettings) -> None:
    """The core topology and what the SDK declares beyond it, off the shared broker."""
    cleanup = Bus(settings, "cleanup")
    await cleanup.connect()
    assert cleanup._connection is not None
    channel = await cleanup._connection.channel()
    for queue in ("outbound.sdk", "sdk.events"):
        await channel.queue_delete(cleanup.names(queue))
    await channel.exchange_delete(cleanup.names("sdk.fanout"))
    await channel.close()
    await delete_topology(cleanup)
    await cleanup.close()


async def test_a_restart_mid_conversation_closes_with_1001_and_the_client_resumes(
        settings: IntakeSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    from intake_sdk import IntakeClient

    port = free_port()
    seen: list[str] = []
    client = IntakeClient(f"http://127.0.0.1:{port}", "demo-app",
                          identify=lambda: {"user_id": "u-restart",
                                            "user_hash": user_hash(SECRET, "u-restart")})
    try:
        async with replica(settings, monkeypatch, port):
            chat = await client.chat()
            chat.on_message(lambda frame: seen.append(frame["message"]["text"]))
            first = await asyncio.wait_for(chat.send("重启前"), 15)
        # The service stopped (its sockets closed going away, 1001): the client retries.
        typed = asyncio.create_task(chat.send("重启期间输入", ticket_id=first["ticket_id"]))
        await asyncio.sleep(0.5)
        assert not typed.done()  # queued: nothing acks it while the service is down
        async with replica(settings, monkeypatch, port) as url:
            ack = await asyncio.wait_for(typed, 30)
            assert ack["ticket_id"] == first["ticket_id"] and ack["seq"] > first["seq"]
            async with aiohttp.ClientSession() as http:  # another device of the same user
                async with http.post(f"{url}/sdk/v1/apps/demo-app/sessions", json={
                        "user": {"id": "u-restart"},
                        "user_hash": user_hash(SECRET, "u-restart")}) as response:
                    token = (await response.json())["session_token"]
                async with http.post(
                        f"{url}/sdk/v1/apps/demo-app/tickets/{first['ticket_id']}/messages",
                        headers={"Authorization": f"Bearer {token}"},
                        json={"client_msg_id": "other", "text": "另一台设备"}) as response:
                    assert response.status == 201
            await eventually(lambda: seen == ["另一台设备"], timeout=15)
    finally:
        await client.close()
        await delete_sdk_topology(settings)
