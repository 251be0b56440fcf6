"""Assignment on the running gateway (issue 17): an online after-sales agent gets a posted
form's ticket within a second, `open`, unacknowledged; a transfer with a note moves it to
presales, where the round robin assigns it, and the first contact still reads it."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.e2e.test_agent_tokens import answer
from tests.e2e.test_webform_to_ticket import Gateway, find_ticket, gateway  # noqa: F401


async def test_a_form_post_is_assigned_within_a_second_and_transferred(
        gateway: Gateway) -> None:  # noqa: F811
    gw = gateway
    async with aiohttp.ClientSession() as http:
        auth: dict[str, dict[str, str]] = {}
        ids: dict[str, str] = {}
        for name, email, desk, group in (
                ("李娜", "li.assign@shop.example", "aftersales", "sg_aftersales_l1"),
                ("赵敏", "zhao.assign@shop.example", "presales", "sg_presales")):
            agent = await answer(http, "POST", f"{gw.api}/api/v1/agents", gw.headers(), 201,
                                 json={"name": name, "email": email, "role": "agent",
                                       "desks": [desk], "skill_groups": [group]})
            issued = await answer(http, "POST", f"{gw.api}/api/v1/tokens", gw.headers(), 201,
                                  json={"agent_id": agent["id"]})
            auth[desk] = {"Authorization": f"Bearer {issued['token']}"}
            ids[desk] = agent["id"]
            await answer(http, "PUT", f"{gw.api}/api/v1/agents/me/presence", auth[desk], 200,
                         json={"status": "online"})
        submission = {"name": "孙丽", "email": "sun.li@example.cn", "topic": "enquiry",
                      "subject": "发票", "message": "请开发票", "consent": "on"}
        async with http.post(f"{gw.form}/forms/contact/submissions", json=submission,
                             headers={"Idempotency-Key": "e2e-assign-1"}) as response:
            assert response.status == 201, await response.text()
            receipt = await response.json()
        ticket = await find_ticket(http, gw, reference=receipt["reference"])
        assert ticket["desk"] == "aftersales"
        found_at, shown = time.monotonic(), ticket
        while shown["assignee_id"] is None and time.monotonic() - found_at < 1.0:
            await asyncio.sleep(0.05)
            shown = await answer(http, "GET", f"{gw.api}/api/v1/tickets/{ticket['id']}",
                                 gw.headers(), 200)
        assert shown["assignee_id"] == ids["aftersales"], shown
        assert shown["status"] == "open" and shown["acknowledged_at"] is None
        mine = await answer(http, "GET", f"{gw.api}/api/v1/tickets", auth["aftersales"], 200,
                            params={"assignee": "me"})
        assert [t["id"] for t in mine["items"]] == [ticket["id"]]

        await answer(http, "POST", f"{gw.api}/api/v1/tickets/{ticket['id']}/transfer",
                     auth["aftersales"], 422, json={"to": {"desk": "presales"}, "note": " "})
        moved = await answer(http, "POST", f"{gw.api}/api/v1/tickets/{ticket['id']}/transfer",
                             auth["aftersales"], 200,
                             json={"to": {"desk": "presales"}, "note": "客户问的是新品价格"})
        assert (moved["desk"], moved["assignee_id"]) == ("presales", ids["presales"])
        assert moved["first_contact_agent_id"] == ids["aftersales"]
        kept = await answer(http, "GET", f"{gw.api}/api/v1/tickets", auth["aftersales"], 200,
                            params={"first_contact": "me"})
        assert [t["id"] for t in kept["items"]] == [ticket["id"]]
