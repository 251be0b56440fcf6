"""Agents and their desk-scoped tokens on the running gateway: the admin makes agents of the
example's desks and a token for each; a form post routed to three desks (the example's Brand A
多服务台 route) is seen by each agent only on their own desk, and by a presales agent not at all.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.e2e.test_webform_to_ticket import Gateway, find_ticket, gateway  # noqa: F401


async def answer(http: aiohttp.ClientSession, method: str, url: str, headers: dict[str, str],
                 expect: int, **kwargs: Any) -> Any:
    async with http.request(method, url, headers=headers, **kwargs) as response:
        text = await response.text()
        assert response.status == expect, (method, url, response.status, text)
        return await response.json() if text else None


async def test_each_agent_sees_only_their_desks_tickets(gateway: Gateway) -> None:  # noqa: F811
    gw = gateway
    agents = f"{gw.api}/api/v1/agents"
    async with aiohttp.ClientSession() as http:
        tokens: dict[str, dict[str, str]] = {}
        for name, email, desk, group in (
                ("李娜", "li@shop.example", "aftersales", "sg_aftersales_l1"),
                ("赵敏", "zhao@shop.example", "presales", "sg_presales")):
            agent = await answer(http, "POST", agents, gw.headers(), 201, json={
                "name": name, "email": email, "role": "agent", "desks": [desk],
                "skill_groups": [group]})
            assert agent["presence"] == "offline"
            issued = await answer(http, "POST", f"{gw.api}/api/v1/tokens", gw.headers(), 201,
                                  json={"agent_id": agent["id"], "name": f"{desk} console"})
            tokens[desk] = {"Authorization": f"Bearer {issued['token']}"}
            tokens[desk + "_id"] = issued["id"]
        # The rules in force decide which desks and skill groups exist.
        refused = await answer(http, "POST", agents, gw.headers(), 422, json={
            "name": "王五", "email": "wang@shop.example", "desks": ["aftersales"],
            "skill_groups": ["sg_presales"]})
        assert "skill_groups" in refused["fields"]
        online = await answer(http, "PUT", f"{agents}/me/presence", tokens["aftersales"], 200,
                              json={"status": "online"})
        assert online["presence"] == "online"

        submission = {"name": "钱进", "email": "qian.jin@example.cn", "topic": "enquiry",
                      "subject": "A 品牌 订单 5678", "message": "订单什么时候发货？",
                      "consent": "on"}
        async with http.post(f"{gw.form}/forms/contact/submissions", json=submission,
                             headers={"Idempotency-Key": "e2e-agent-tokens-1"}) as response:
            assert response.status == 201, await response.text()
            receipt = await response.json()
        await find_ticket(http, gw, reference=receipt["reference"])
        made = await answer(http, "GET", f"{gw.api}/api/v1/tickets", gw.headers(), 200,
                            params={"reference": receipt["reference"]})
        by_desk = {t["desk"]: t for t in made["items"]}
        assert set(by_desk) == {"brand_a", "logistics", "aftersales"}  # one transaction
        owner = by_desk["brand_a"]
        linked = {desk: t["id"] for desk, t in by_desk.items() if desk != "brand_a"}

        # After-sales: its collaborator ticket only, with the message, and no other desk's link.
        mine = await answer(http, "GET", f"{gw.api}/api/v1/tickets", tokens["aftersales"], 200)
        assert [t["id"] for t in mine["items"]] == [linked["aftersales"]]
        collaborator = await answer(http, "GET",
                                    f"{gw.api}/api/v1/tickets/{linked['aftersales']}",
                                    tokens["aftersales"], 200)
        assert collaborator["links"] == []
        assert collaborator["messages"][0]["text"].startswith("订单什么时候发货？")
        for ticket_id in (owner["id"], linked["logistics"]):
            await answer(http, "GET", f"{gw.api}/api/v1/tickets/{ticket_id}",
                         tokens["aftersales"], 404)
        # Presales: nothing of it by id, list or customer.
        for ticket_id in (owner["id"], *linked.values()):
            await answer(http, "GET", f"{gw.api}/api/v1/tickets/{ticket_id}",
                         tokens["presales"], 404)
        listed = await answer(http, "GET", f"{gw.api}/api/v1/tickets", tokens["presales"], 200,
                              params={"customer_id": owner["customer_id"]})
        assert listed["items"] == []
        customer = await answer(http, "GET",
                                f"{gw.api}/api/v1/customers/{owner['customer_id']}",
                                tokens["presales"], 200)
        assert customer["tickets"] == [] and customer["tickets_count"] == 0
        refused = await answer(http, "GET", f"{gw.api}/api/v1/tickets", tokens["presales"], 403,
                               params={"desk": "aftersales"})
        assert refused["error"] == "desk_not_in_scope"

        # Revoked: refused from the next request.
        await answer(http, "DELETE", f"{gw.api}/api/v1/tokens/{tokens['aftersales_id']}",
                     gw.headers(), 204)
        await answer(http, "GET", f"{gw.api}/api/v1/agents/me", tokens["aftersales"], 401)
