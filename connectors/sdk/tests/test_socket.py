"""The live socket: hello, acks once durable, resume from the log, every close code."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from connectors.sdk.inbound.runtime import runtime_for
from connectors.sdk.outbound import SdkSender
from intake import Identity, OutboundMessage, SenderKit, Thread
from intake.testing import ContractEdge, RecordingPublisher

from .conftest import Sdk

WS = "/sdk/v1/apps/demo-app/ws"


async def receive(ws: Any, timeout: float = 3.0) -> dict[str, Any]:
    message = await ws.receive(timeout=timeout)
    assert message.type == WSMsgType.TEXT, (message.type, message.data, message.extra)
    return json.loads(message.data)  # type: ignore[no-any-return]


async def until(ws: Any, kind: str, timeout: float = 3.0) -> dict[str, Any]:
    while True:
        frame = await receive(ws, timeout)
        if frame["type"] == kind:
            return frame


async def connect(sdk: Sdk, token: str, after: int | None = None) -> Any:
    ws = await sdk.client.ws_connect(WS)
    hello: dict[str, Any] = {"type": "hello", "session_token": token}
    if after is not None:
        hello["after"] = after
    await ws.send_json(hello)
    assert (await receive(ws))["type"] == "welcome"
    return ws


async def agent_reply(edge: ContractEdge, ticket_id: str, text: str,
                      user: str = "demo-shop:u-1") -> None:
    sender = SdkSender(SenderKit(channel="sdk", state=runtime_for(edge.client.app).store,
                                 runner=None))  # type: ignore[arg-type]
    await sender.send(OutboundMessage(
        idempotency_key=f"reply:{text}", ticket_id="core", channel="sdk", account="demo-app",
        text=text, to=Identity(kind="sdk_user", value=user),
        thread=Thread(conversation_id=ticket_id)))


async def test_a_message_is_acked_once_durable_and_repeats_get_the_original_ack(
        app_client: Sdk, publisher: RecordingPublisher) -> None:
    token = await app_client.signed("u-1")
    ws = await connect(app_client, token)
    assert (await receive(ws))["type"] == "synced"
    await ws.send_json({"type": "message", "client_msg_id": "m1", "text": "你好"})
    ack = await receive(ws)
    assert ack["type"] == "ack" and ack["client_msg_id"] == "m1" and ack["seq"] >= 1
    assert len(publisher.messages) == 1
    await ws.send_json({"type": "message", "client_msg_id": "m1", "text": "你好"})
    assert await receive(ws) == ack
    await ws.send_json({"type": "message", "client_msg_id": "m2", "text": "again",
                        "ticket_id": ack["ticket_id"]})
    second = await receive(ws)
    assert second["type"] == "ack" and second["seq"] > ack["seq"]
    assert len(publisher.messages) == 2
    await ws.send_json({"type": "message", "client_msg_id": "m1", "text": "changed"})
    error = await receive(ws)
    assert error == {"type": "error", "code": "idempotency_conflict",
                     "message": error["message"], "client_msg_id": "m1"}
    await ws.send_json({"type": "ping"})
    assert (await receive(ws))["type"] == "pong"
    await ws.close()


async def test_agent_replies_are_pushed_and_other_devices_see_my_messages(
        edge: ContractEdge, app_client: Sdk) -> None:
    phone, laptop = await app_client.signed("u-1"), await app_client.signed("u-1")
    ws_phone, ws_laptop = await connect(app_client, phone), await connect(app_client, laptop)
    await until(ws_phone, "synced")
    await until(ws_laptop, "synced")
    await ws_phone.send_json({"type": "message", "client_msg_id": "m1", "text": "hi"})
    ack = await until(ws_phone, "ack")
    echoed = await until(ws_laptop, "message.created")
    assert echoed["seq"] == ack["seq"] and echoed["message"]["text"] == "hi"
    await agent_reply(edge, ack["ticket_id"], "您好，已为您退款")
    for ws in (ws_phone, ws_laptop):
        pushed = await until(ws, "message.created")
        assert pushed["message"]["direction"] == "agent" and pushed["seq"] == ack["seq"] + 1
    await ws_phone.close()
    await ws_laptop.close()


async def test_a_reconnect_resumes_each_event_once_in_order(edge: ContractEdge,
                                                           app_client: Sdk) -> None:
    token = await app_client.signed("u-1")
    ws = await connect(app_client, token)
    await until(ws, "synced")
    await ws.send_json({"type": "message", "client_msg_id": "m1", "text": "hi"})
    ack = await until(ws, "ack")
    await ws.close()
    for n in range(3):  # the network is off: the agent answers meanwhile
        await agent_reply(edge, ack["ticket_id"], f"reply {n}")
    ws = await connect(app_client, token, after=ack["seq"])
    frames = []
    while (frame := await receive(ws))["type"] != "synced":
        frames.append(frame)
    assert [f["message"]["text"] for f in frames] == ["reply 0", "reply 1", "reply 2"]
    assert [f["seq"] for f in frames] == [ack["seq"] + 1, ack["seq"] + 2, ack["seq"] + 3]
    assert frame["seq"] == ack["seq"] + 3
    await agent_reply(edge, ack["ticket_id"], "live")
    assert (await until(ws, "message.created"))["message"]["text"] == "live"
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=1.5)  # nothing twice
    await ws.close()


@pytest.mark.parametrize(("frame", "code"), [
    ("not json", 4400), ("[1]", 4400), ('"s"', 4400), ("null", 4400),
    ('{"type": "shout"}', 4400), ('{"type": "message", "text": "x"}', 4400),
    ('{"type": "message", "client_msg_id": "a", "text": 5}', 4400),
    ('{"type": "read", "ticket_id": "x", "seq": "1"}', 4400),
    ("[" * 5000 + "]" * 5000, 4400),
])
async def test_bad_frames_close_with_4400(app_client: Sdk, frame: str, code: int) -> None:
    token = await app_client.signed("u-1")
    ws = await connect(app_client, token)
    await until(ws, "synced")
    await ws.send_str(frame)
    message = await ws.receive(timeout=3)
    assert message.type == WSMsgType.CLOSE and message.data == code


async def test_hello_rules_and_transport_codes(app_client: Sdk) -> None:
    token = await app_client.signed("u-1")
    cases: list[tuple[Any, int]] = [
        ({"type": "ping"}, 4401), ({"type": "hello", "session_token": "nope"}, 4401),
        ({"type": "hello", "session_token": token, "after": "3"}, 4400),
        (b"\x00binary", 1003), ("x" * (70 * 1024), 1009)]
    for frame, code in cases:
        ws = await app_client.client.ws_connect(WS)
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        elif isinstance(frame, str):
            await ws.send_str(frame)
        else:
            await ws.send_json(frame)
        message = await ws.receive(timeout=3)
        assert message.type == WSMsgType.CLOSE and message.data == code, (frame, message)


async def test_origin_unknown_app_and_socket_cap(app_client: Sdk) -> None:
    upgrade = {"Origin": "https://evil.example", "Connection": "Upgrade",
               "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "x3JJHMbDL1EzLkh9GBhXDw=="}
    response = await app_client.client.get(WS, headers=upgrade)
    assert response.status == 403
    response = await app_client.client.get("/sdk/v1/apps/nope/ws")
    assert response.status == 404
    token = await app_client.signed("u-1")
    sockets = [await connect(app_client, token) for _ in range(10)]
    ws = await app_client.client.ws_connect(WS)
    await ws.send_json({"type": "hello", "session_token": token})
    message = await ws.receive(timeout=3)
    assert message.type == WSMsgType.CLOSE and message.data == 4429
    for open_ws in sockets:
        await open_ws.close()


async def test_a_refused_message_keeps_the_socket_open(app_client: Sdk) -> None:
    token = await app_client.signed("u-1")
    ws = await connect(app_client, token)
    await until(ws, "synced")
    await ws.send_json({"type": "message", "client_msg_id": "m", "text": "x" * 5001})
    assert (await receive(ws))["code"] == "too_long"
    await ws.send_json({"type": "message", "client_msg_id": "n", "text": "x",
                        "ticket_id": "00000000-0000-0000-0000-000000000000"})
    assert (await receive(ws))["code"] == "not_found"
    await ws.send_json({"type": "ping"})
    assert (await receive(ws))["type"] == "pong"
    await ws.close()


async def test_many_sockets_are_acked_and_published_exactly_once(
        edge: ContractEdge, publisher: RecordingPublisher) -> None:
    from connectors.sdk.inbound.runtime import raise_open_file_limit

    soft, _ = raise_open_file_limit()
    count = min(150, (soft - 100) // 3)
    sdk = Sdk(edge, "demo-app")
    tokens = [await sdk.signed(f"u-many-{n}") for n in range(count)]
    # The test client holds at most 100 connections: the sockets get a session without a cap.
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    sockets = []
    for token in tokens:
        ws = await http.ws_connect(edge.client.make_url(WS))
        await ws.send_json({"type": "hello", "session_token": token})
        assert (await receive(ws))["type"] == "welcome"
        sockets.append(ws)

    async def one(n: int, ws: Any) -> dict[str, Any]:
        await until(ws, "synced", 60)
        await ws.send_json({"type": "message", "client_msg_id": f"c{n}", "text": f"#{n}"})
        ack = await until(ws, "ack", 60)  # each is several fsynced writes: they queue
        await ws.send_json({"type": "message", "client_msg_id": f"c{n}", "text": f"#{n}"})
        assert await until(ws, "ack", 60) == ack  # the repeat: the original ack
        return ack

    acks = await asyncio.gather(*(one(n, ws) for n, ws in enumerate(sockets)))
    assert len({a["message_id"] for a in acks}) == count
    assert sorted(m.text for m in publisher.messages) == sorted(f"#{n}" for n in range(count))
    for ws in sockets:
        await ws.close()
    await http.close()


async def test_shutdown_closes_every_socket_with_1001(app_client: Sdk, edge: ContractEdge) -> None:
    from connectors.sdk.inbound.socket import close_all

    ws = await connect(app_client, await app_client.signed("u-1"))
    await until(ws, "synced")
    await close_all(edge.client.app)
    message = await ws.receive(timeout=3)
    assert message.type == WSMsgType.CLOSE and message.data == 1001
