"""The JavaScript SDK under Node.js 20 against the SDK's edge: tickets, FAQ, chat, offline."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from connectors.sdk.inbound.identity import user_hash
from connectors.sdk.inbound.runtime import runtime_for
from connectors.sdk.outbound import SdkSender
from intake import Identity, OutboundMessage, SenderKit, Thread
from intake.testing import ContractEdge, RecordingPublisher

from .conftest import APP_SECRET

HERE = Path(__file__).resolve().parent
NODE = shutil.which("node")


async def reply(edge: ContractEdge, ticket_id: str, text: str) -> None:
    sender = SdkSender(SenderKit(channel="sdk", state=runtime_for(edge.client.app).store,
                                 runner=None))  # type: ignore[arg-type]
    await sender.send(OutboundMessage(
        idempotency_key=f"r:{text}", ticket_id="core", channel="sdk", account="demo-app",
        text=text, to=Identity(kind="sdk_user", value="demo-shop:u-js"),
        thread=Thread(conversation_id=ticket_id)))


@pytest.mark.skipif(NODE is None, reason="Node.js 20 is not installed")
async def test_the_js_sdk_submits_chats_and_resumes_after_going_offline(
        edge: ContractEdge, publisher: RecordingPublisher, monkeypatch: Any) -> None:
    monkeypatch.chdir(HERE.parents[2])  # the FAQ folder of the example config
    assert NODE is not None
    process = await asyncio.create_subprocess_exec(
        NODE, "--experimental-websocket", "--no-warnings", str(HERE / "node_client.mjs"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "BASE_URL": str(edge.client.make_url("")).rstrip("/"),
             "USER_ID": "u-js", "USER_HASH": user_hash(APP_SECRET, "u-js")})
    assert process.stdout is not None and process.stdin is not None

    async def step(name: str) -> dict[str, Any]:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        if not line:
            assert process.stderr is not None
            raise AssertionError((await process.stderr.read()).decode())
        data: dict[str, Any] = json.loads(line)
        assert data["step"] == name, data
        return data

    try:
        ticket = await step("ticket")
        assert ticket["reference"].startswith("SDK-") and ticket["listed"] == 1
        assert ticket["faq"] == "returns"
        acked = await step("acked")
        assert acked["ticket_id"] == ticket["id"]
        await reply(edge, ticket["id"], "您好")
        process.stdin.write(b"go\n")
        assert (await step("live"))["seen"] == ["您好"]
        await step("offline")
        await reply(edge, ticket["id"], "第一条")
        await reply(edge, ticket["id"], "第二条")
        process.stdin.write(b"go\n")
        resumed = await step("resumed")
        assert resumed["seen"] == ["第一条", "第二条"] and resumed["acked"]
        assert (await step("reidentified")) == {"step": "reidentified", "identified": 2,
                                                "listed": 1}
        await step("done")
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    texts = [m.text for m in publisher.messages]
    assert texts == ["耳机想退货", "你好", "离线时输入的"]  # each exactly once


async def test_the_module_is_served_as_a_script(edge: ContractEdge) -> None:
    response = await edge.client.get("/sdk/v1/intake-sdk.js")
    assert response.status == 200 and response.content_type == "text/javascript"
    assert "export class IntakeClient" in await response.text()
    for name in ("nope.js", "..%2Fsettings.py", "intake-sdk.py"):
        assert (await edge.client.get(f"/sdk/v1/{name}")).status == 404
