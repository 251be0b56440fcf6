"""Quick replies and a follow-up reminder on the running gateway with the example config and the
test clock: an after-sales agent finds and renders the example's quick replies for a form
ticket, and a reminder fires once at its minute with a notification."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import aiohttp
import pytest

from intake.settings import IntakeSettings
from tests.e2e.test_agent_tokens import answer
from tests.e2e.test_webform_to_ticket import Gateway, find_ticket, running_gateway


@pytest.fixture
async def gateway(settings: IntakeSettings,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("INTAKE_TEST_CLOCK", "1")  # from now, moved by POST /test-clock
    async with running_gateway(settings, monkeypatch) as gw:
        yield gw


async def test_an_agent_renders_quick_replies_and_gets_a_reminder(gateway: Gateway) -> None:
    gw = gateway
    api = f"{gw.api}/api/v1"
    async with aiohttp.ClientSession() as http:
        agent = await answer(http, "POST", f"{api}/agents", gw.headers(), 201, json={
            "name": "李娜", "email": "li@shop.example", "role": "agent",
            "desks": ["aftersales"], "skill_groups": ["sg_aftersales_l1"]})
        issued = await answer(http, "POST", f"{api}/tokens", gw.headers(), 201,
                              json={"agent_id": agent["id"]})
        li = {"Authorization": f"Bearer {issued['token']}"}
        submission = {"name": "钱进", "email": "qian.jin@example.cn", "topic": "enquiry",
                      "subject": "快递还没到", "message": "我的订单什么时候到？", "consent": "on"}
        async with http.post(f"{gw.form}/forms/contact/submissions", json=submission,
                             headers={"Idempotency-Key": "e2e-quick-replies-1"}) as response:
            assert response.status == 201, await response.text()
            receipt = await response.json()
        ticket = await find_ticket(http, gw, reference=receipt["reference"])
        assert ticket["desk"] == "aftersales"
        tid = ticket["id"]

        found = await answer(http, "GET", f"{api}/quick-replies", li, 200,
                             params={"q": "快递单号"})
        assert [r["id"] for r in found["items"]] == ["tracking"]
        greet = await answer(http, "POST", f"{api}/tickets/{tid}/quick-replies/greet/render",
                             li, 200, json={})
        assert greet == {"text": "钱进好，我是李娜，很高兴为您服务。"}
        render = f"{api}/tickets/{tid}/quick-replies/tracking/render"
        missing = await answer(http, "POST", render, li, 422,
                               json={"inputs": {"tracking_no": "SF1234567890"}})
        assert list(missing["fields"]) == ["ticket.fields.order_no"]
        await answer(http, "PATCH", f"{api}/tickets/{tid}", li, 200,
                     json={"fields": {"order_no": "20261001-0001"}})
        tracking = await answer(http, "POST", render, li, 200,
                                json={"inputs": {"tracking_no": "SF1234567890"}})
        assert tracking["text"] == "您的订单 20261001-0001 已发货，快递单号 SF1234567890。"

        now = datetime.fromisoformat((await answer(http, "GET", f"{api}/test-clock",
                                                   gw.headers(), 200))["now"])
        reminder = await answer(http, "POST", f"{api}/tickets/{tid}/reminders", li, 201,
                                json={"due_at": (now + timedelta(days=2)).isoformat(),
                                      "note": "回访：确认已收货"})
        await answer(http, "POST", f"{api}/test-clock", gw.headers(), 200,
                     json={"advance": "P1D"})
        assert (await answer(http, "GET", f"{api}/tickets", li, 200,
                             params={"reminder": "due"}))["items"] == []
        await answer(http, "POST", f"{api}/test-clock", gw.headers(), 200,
                     json={"advance": "P1D"})
        notes = (await answer(http, "GET", f"{api}/agents/me/notifications", li, 200))["items"]
        assert [(n["kind"], n["payload"]["reminder_id"]) for n in notes
                if n["kind"] == "reminder"] == [("reminder", reminder["id"])]
        due = await answer(http, "GET", f"{api}/tickets", li, 200, params={"reminder": "due"})
        assert [t["id"] for t in due["items"]] == [tid]
        done = await answer(http, "PATCH", f"{api}/reminders/{reminder['id']}", li, 200,
                            json={"state": "done"})
        assert done["state"] == "done"
