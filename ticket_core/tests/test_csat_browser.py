"""The rating page (满意度, issue 17) in real headless Chromium with JavaScript off, on a phone:
a customer opens the link from the request, picks stars by their label, writes a comment,
submits, and the ticket shows the rating; the same link later says it was answered."""

from __future__ import annotations

import dataclasses
from typing import Any

import aiohttp
from aiohttp import web

from intake.testing import CHROMIUM, CHROMIUM_ARGS, require_browser
from ticket_core.api import api_routes, auth_middleware
from ticket_core.clock import TestClock
from ticket_core.csat_pages import csat_routes
from ticket_core.store import TicketStore

from .test_agents import ADMIN_TOKEN, RULES, bearer
from .test_satisfaction_requests import POLICY, T0, form_ticket, tokens

PHONE = {"width": 390, "height": 844}


async def test_a_customer_rates_on_a_phone_without_javascript(
        store: TicketStore, aiohttp_server: Any) -> None:
    async_playwright = require_browser()
    store.timelines = dataclasses.replace(RULES, satisfaction=POLICY)
    store.clock = TestClock(T0)
    app = web.Application(middlewares=[auth_middleware(ADMIN_TOKEN, store)])
    app.add_routes(api_routes(store))
    app.add_routes(csat_routes(store, per_minute=60, burst=30))
    server = await aiohttp_server(app)
    base = f"http://127.0.0.1:{server.port}"
    ticket = await form_ticket(store)
    async with aiohttp.ClientSession() as session, session.patch(
            f"{base}/api/v1/tickets/{ticket}", json={"status": "resolved"},
            headers=bearer(ADMIN_TOKEN)) as resolved:
        assert resolved.status == 200, await resolved.text()
    [token] = await tokens(store)

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                   args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(java_script_enabled=False, viewport=PHONE,
                                                is_mobile=True, has_touch=True,
                                                locale="zh-CN")
            page = await context.new_page()
            await page.goto(f"{base}/csat/{token}")
            assert (await page.title()).startswith("服务评价")
            # Submitting without a star: the browser's own `required` keeps the form here.
            await page.get_by_role("button", name="提交评价").click()
            assert page.url.endswith(f"/csat/{token}")
            assert not await page.get_by_text("感谢您的评价").is_visible()
            for control in ("4 星", "留言（选填）"):  # nothing wider than the phone
                box = await page.get_by_label(control, exact=False).bounding_box()
                assert box is not None and 0 <= box["x"]
                assert box["x"] + box["width"] <= PHONE["width"], control
            await page.get_by_label("4 星", exact=False).check()
            await page.get_by_label("留言（选填）").fill("客服很耐心")
            await page.get_by_role("button", name="提交评价").click()
            await page.wait_for_load_state()
            assert await page.get_by_text("感谢您的评价", exact=False).is_visible()

            await page.goto(f"{base}/csat/{token}")
            assert await page.get_by_text("已提交过评价", exact=False).is_visible()
        finally:
            await browser.close()

    detail = await store.get_ticket(ticket)
    assert detail is not None and detail.satisfaction is not None
    rating = detail.satisfaction
    assert (rating.score, rating.comment, rating.via, rating.request_status) == (
        4, "客服很耐心", "web", "answered")
