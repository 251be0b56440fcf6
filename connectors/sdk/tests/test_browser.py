"""The widget and the demo shop in headless Chromium: sign in, FAQ, photo ticket, chat,
offline while the agent answers and resolves, rating; under a page's `* { all: unset }`,
in a 360×640 viewport.

Needs `/usr/bin/chromium` (Debian's) and the Python package `playwright` (never `playwright
install`); without them it is skipped, except under CI=true.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestServer

from connectors.sdk import CHANNEL
from connectors.sdk.inbound.runtime import runtime_for
from connectors.sdk.outbound import SdkSender, TicketEvent, TicketEvents
from intake import Identity, OutboundMessage, SenderKit, Thread
from intake.service import ACCOUNTS, BLOBS, PUBLISHER, SERVICE_SETTINGS, Service
from intake.settings import IntakeSettings
from intake.testing import (
    CHROMIUM,
    CHROMIUM_ARGS,
    MemoryBlobStore,
    RecordingPublisher,
    require_browser,
)

from .conftest import EXAMPLE

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
REPO = Path(__file__).resolve().parents[3]



def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
               ) -> AsyncIterator[tuple[str, Any, RecordingPublisher]]:
    port = free_port()
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    for app in config["channels"]["sdk"]["apps"]:
        app["allowed_origins"].append(f"http://127.0.0.1:{port}")
    config["channels"]["sdk"]["faq"]["dir"] = str(REPO / "deploy" / "faq")
    path = tmp_path / "sdk.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("INTAKE_DATA_DIR", str(tmp_path))
    from intake.config import load_document

    accounts = CHANNEL.load_accounts(load_document(path))
    publisher = RecordingPublisher()
    service = Service(name="sdk", port=port, settings=IntakeSettings(),
                      routes=CHANNEL.http_routes(),
                      state={SERVICE_SETTINGS: CHANNEL.settings(), ACCOUNTS: accounts,
                             PUBLISHER: publisher, BLOBS: MemoryBlobStore()})
    app = service.build_app()
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{port}", app, publisher
    finally:
        await server.close()


async def agent(app: Any, ticket_id: str, text: str) -> None:
    sender = SdkSender(SenderKit(channel="sdk", state=runtime_for(app).store,
                                 runner=None))  # type: ignore[arg-type]
    await sender.send(OutboundMessage(
        idempotency_key=f"r:{text}", ticket_id="core", channel="sdk", account="demo-widget",
        text=text, to=Identity(kind="sdk_user", value="demo-shop:u-1001"),
        thread=Thread(conversation_id=ticket_id)))


async def test_the_demo_shop_widget_end_to_end(shop: tuple[str, Any, RecordingPublisher]
                                              ) -> None:
    async_playwright = require_browser()
    url, app, publisher = shop
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                    args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 360, "height": 640},
                                                locale="zh-CN")
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(f"{url}/sdk/demo")
            await page.add_style_tag(content="* { all: unset }")  # a hostile host page
            await page.locator("#sign-in-button").click()
            await page.get_by_text("已登录 u-1001").wait_for()

            await page.locator(".launcher").click()
            panel = page.locator(".panel")
            await panel.wait_for()
            box = await panel.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360
            # FAQ
            await page.get_by_role("searchbox").fill("退货")
            await page.get_by_role("searchbox").press("Enter")
            await page.get_by_text("如何申请退货退款", exact=False).first.wait_for()
            # A ticket with a photo
            await page.get_by_role("tab", name="我的工单").click()
            await page.get_by_role("button", name="提交工单").click()
            await page.locator("#ticket-text").fill("耳机坏了，见照片")
            await page.locator("#ticket-photo").set_input_files(
                files=[{"name": "photo.png", "mimeType": "image/png", "buffer": PNG}])
            await page.get_by_role("button", name="提交", exact=True).click()
            reference = page.locator(".reference")
            await reference.wait_for()
            assert "SDK-" in await reference.inner_text()
            [ticket_message] = publisher.messages
            assert [a.content_type for a in ticket_message.attachments] == ["image/png"]
            assert ticket_message.sender.identities[0].value == "demo-shop:u-1001"
            ticket_id = ticket_message.thread.conversation_id  # type: ignore[union-attr]
            # Chat
            await page.get_by_role("tab", name="在线客服").click()
            await page.locator("#chat-input").fill("你好")
            await page.locator("#chat-input").press("Enter")
            await page.get_by_text("已发送").wait_for()
            chat_ticket = publisher.messages[-1].thread.conversation_id  # type: ignore[union-attr]
            await agent(app, chat_ticket, "您好，请问有什么可以帮您")
            await page.get_by_text("您好，请问有什么可以帮您").wait_for()
            # Offline while the agent answers and resolves the ticket
            await context.set_offline(True)
            await agent(app, chat_ticket, "已为您退款")
            events = TicketEvents(runtime_for(app).state)
            await events.handle(TicketEvent(
                id=1, type="ticket.created", occurred_at="2026-12-05T00:00:00+00:00",
                ticket_id="core-1", data={"channel": "sdk", "conversation_id": ticket_id,
                                          "status": "new", "ticket_number": 42}))
            await events.handle(TicketEvent(
                id=2, type="ticket.updated", occurred_at="2026-12-05T00:01:00+00:00",
                ticket_id="core-1", data={"status": "resolved", "ticket_number": 42}))
            await context.set_offline(False)
            await page.get_by_text("已为您退款").wait_for()
            assert await page.get_by_text("已为您退款").count() == 1
            # The resolved ticket offers a rating
            await page.get_by_role("tab", name="我的工单").click()
            await page.get_by_text("#42", exact=False).first.click()
            await page.get_by_text("已解决", exact=False).first.wait_for()
            # The form ticket holds its own messages only, not the chat's.
            await page.locator("#pane-tickets .msg").first.wait_for()
            assert await page.locator("#pane-tickets .msg").all_inner_texts() == [
                "耳机坏了，见照片"]
            await page.get_by_role("button", name="5", exact=True).click()
            await page.get_by_text("感谢您的评价").wait_for()
            await page.screenshot(path="/tmp/sdk-widget.png")
            assert errors == []
        finally:
            await browser.close()
    rating = publisher.messages[-1]
    assert rating.kind == "event" and rating.event is not None
    assert rating.event.data["score"] == 5
