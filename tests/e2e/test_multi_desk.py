"""The example's 多服务台 route end to end: a Brand A order through the web form, the real
router and the real ticket core becomes three linked tickets in one transaction: the owner on
`brand_a` (customer-facing), a copy on `logistics` and a collaborator on `aftersales`."""

from __future__ import annotations

import aiohttp

from tests.e2e.test_webform_to_ticket import Gateway, find_ticket, gateway  # noqa: F401


async def test_a_multi_route_makes_linked_tickets_with_their_roles(gateway: Gateway) -> None:  # noqa: F811
    gw = gateway
    async with aiohttp.ClientSession() as http:
        submission = {"name": "钱进", "email": "qian.jin@example.cn", "topic": "enquiry",
                      "subject": "A 品牌 订单 1234", "message": "订单什么时候发货？",
                      "consent": "on"}
        async with http.post(f"{gw.form}/forms/contact/submissions", json=submission,
                             headers={"Idempotency-Key": "e2e-multi-1"}) as response:
            assert response.status == 201, await response.text()
            receipt = await response.json()
        found = await find_ticket(http, gw, reference=receipt["reference"])
        async with http.get(f"{gw.api}/api/v1/tickets/{found['id']}",
                            headers=gw.headers()) as response:
            first = await response.json()
        assert first["route"]["route"] == "brand_a" and first["route"]["mode"] == "multi"

        tickets = {}
        for ticket_id in [first["id"], *(link["ticket_id"] for link in first["links"])]:
            async with http.get(f"{gw.api}/api/v1/tickets/{ticket_id}",
                                headers=gw.headers()) as response:
                assert response.status == 200
                ticket = await response.json()
            tickets[ticket["desk"]] = ticket
        assert {desk: (t["role"], t["customer_facing"]) for desk, t in tickets.items()} == {
            "brand_a": ("owner", True), "logistics": ("copy", False),
            "aftersales": ("collaborator", False)}
        # Each links to the other two; the message is stored once and shown on each.
        for desk, ticket in tickets.items():
            assert sorted(link["desk"] for link in ticket["links"]) == sorted(
                set(tickets) - {desk})
            [shown] = ticket["messages"]
            assert shown["text"].startswith("订单什么时候发货？")
        assert len({t["messages"][0]["id"] for t in tickets.values()}) == 1
        assert all(t["category"] == "after_sales" for t in tickets.values())

        # A reply goes out from the customer-facing ticket only.
        async with http.post(f"{gw.api}/api/v1/tickets/{tickets['logistics']['id']}/replies",
                             json={"text": "内部备注"}, headers=gw.headers()) as response:
            assert response.status == 409
            assert (await response.json())["error"] == "not_customer_facing"
