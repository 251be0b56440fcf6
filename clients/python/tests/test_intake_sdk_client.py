"""The Python client against the SDK connector's edge: tickets, FAQ, chat, offline, CLI."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from intake_sdk import BlockingClient, IntakeClient, user_hash

from connectors.sdk import CHANNEL
from connectors.sdk.inbound.runtime import runtime_for
from connectors.sdk.outbound import SdkSender
from intake import Identity, OutboundMessage, SenderKit, Thread
from intake.testing import ContractEdge, RecordingPublisher

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "connectors" / "sdk" / "example.yaml"
SECRET = "demo-app-identity-secret-for-tests-only-7f3a9c"


@pytest.fixture
async def edge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
               ) -> AsyncIterator[tuple[ContractEdge, str]]:
    monkeypatch.setenv("INTAKE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("INTAKE_SDK_FAQ_DIR", str(REPO / "deploy" / "faq"))
    edge = await ContractEdge.start(CHANNEL, EXAMPLE, RecordingPublisher())
    yield edge, str(edge.client.make_url("")).rstrip("/")
    await edge.close()


def signed(user: str) -> dict[str, str]:
    return {"user_id": user, "user_hash": user_hash(SECRET, user)}


async def agent(edge: ContractEdge, ticket_id: str, text: str, user: str) -> None:
    sender = SdkSender(SenderKit(channel="sdk", state=runtime_for(edge.client.app).store,
                                 runner=None))  # type: ignore[arg-type]
    await sender.send(OutboundMessage(
        idempotency_key=f"r:{text}", ticket_id="core", channel="sdk", account="demo-app",
        text=text, to=Identity(kind="sdk_user", value=f"demo-shop:{user}"),
        thread=Thread(conversation_id=ticket_id)))


async def test_tickets_faq_and_chat_with_an_offline_queue(
        edge: tuple[ContractEdge, str], tmp_path: Path) -> None:
    contract, base = edge
    client = IntakeClient(base, "demo-app", identify=lambda: signed("u-py"),
                          state_path=tmp_path / "client.sqlite3")
    try:
        ticket = await client.submit_ticket(text="耳机坏了", fields={"category": "售后"},
                                            files=[("note.txt", "说明".encode())])
        assert ticket["reference"].startswith("SDK-")
        assert [t["id"] for t in (await client.tickets())["items"]] == [ticket["id"]]
        assert (await client.search_faq("发票"))["items"][0]["id"] == "invoices"
        chat = await client.chat()
        seen: list[str] = []
        chat.on_message(lambda frame: seen.append(frame["message"]["text"]))
        ack = await asyncio.wait_for(chat.send("你好", ticket_id=ticket["id"]), 10)
        assert ack["ticket_id"] == ticket["id"]
        await agent(contract, ticket["id"], "您好", "u-py")
        await asyncio.wait_for(_until(lambda: seen == ["您好"]), 10)

        assert chat.ws is not None
        await chat.ws.close()  # the network drops; the agent answers meanwhile
        await agent(contract, ticket["id"], "离线期间的回复", "u-py")
        typed = asyncio.create_task(chat.send("离线时输入", ticket_id=ticket["id"]))
        assert (await asyncio.wait_for(typed, 15))["client_msg_id"]
        await asyncio.wait_for(_until(lambda: seen == ["您好", "离线期间的回复"]), 10)
    finally:
        await client.close()
    texts = [m.text for m in contract.publisher.messages]
    assert texts == ["耳机坏了", "你好", "离线时输入"]
    assert client.store.unsent() == []


async def _until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met within 10 s")


async def test_an_expired_session_calls_identify_again_once(
        edge: tuple[ContractEdge, str]) -> None:
    _, base = edge
    calls = []

    def identify() -> dict[str, str]:
        calls.append(1)
        return signed("u-py")

    client = IntakeClient(base, "demo-app", identify=identify)
    try:
        await client.tickets()
        client.session = {"session_token": "expired"}
        assert (await client.tickets())["items"] == []
        assert len(calls) == 2
    finally:
        await client.close()


async def test_the_blocking_facade(edge: tuple[ContractEdge, str]) -> None:
    contract, base = edge

    def work() -> dict[str, Any]:
        blocking = BlockingClient(base, "demo-app", identify=lambda: signed("u-gui"))
        try:
            ticket = blocking.submit_ticket(text="桌面程序提交", fields={"category": "咨询"})
            blocking.send("在吗", ticket_id=ticket["id"])
            return ticket
        finally:
            blocking.close()

    ticket = await asyncio.to_thread(work)
    assert ticket["reference"].startswith("SDK-")
    assert [m.text for m in contract.publisher.messages] == ["桌面程序提交", "在吗"]


async def test_the_terminal_chat(edge: tuple[ContractEdge, str]) -> None:
    contract, base = edge
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "intake_sdk", "chat", "--base-url", base, "--app-key",
        "demo-app", "--user", "u-cli", "--secret", SECRET,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("终端里的消息\n".encode())
    await process.stdin.drain()
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 15)
    except TimeoutError:
        process.kill()
        assert process.stderr is not None
        raise AssertionError((await process.stderr.read()).decode()[-3000:]) from None
    assert "✓" in line.decode(), line
    process.stdin.close()
    assert await asyncio.wait_for(process.wait(), 15) == 0
    [message] = contract.publisher.messages
    assert message.text == "终端里的消息"
    assert message.sender.identities[0].value == "demo-shop:u-cli"
