"""One ticket per delivery: multi and primary_secondary decisions make linked internal tickets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from intake.message import Identity, RouteDecision, RouteDelivery, Thread
from ticket_core.api import api_routes, auth_middleware
from ticket_core.queries import TicketFilter
from ticket_core.replies import ReplyChannels
from ticket_core.store import TicketStore
from ticket_core.writes import EVENTS, MESSAGES, OUTBOX

from .builders import message, route

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def brand_a() -> RouteDecision:
    """The example's 多服务台 route: brand A's desk owns, logistics a copy, after-sales helps."""
    return route(mode="multi", deliveries=[
        RouteDelivery(desk="brand_a", role="owner"),
        RouteDelivery(desk="logistics", skill_group="parcels", role="copy"),
        RouteDelivery(desk="aftersales", role="collaborator")])


def primary_secondary() -> RouteDecision:
    return route(mode="primary_secondary", deliveries=[
        RouteDelivery(desk="sales", role="primary"),
        RouteDelivery(desk="aftersales", role="collaborator"),
        RouteDelivery(desk="regional", role="overflow", after="10m",
                      due=T0 + timedelta(minutes=10))])


def chat(key: str, routed: RouteDecision | None = None, **thread: Any) -> Any:
    return message(key, channel="wechat", account="wx1", kind="message", email=None,
                   identities=[Identity(kind="wechat_openid", value="o-1")],
                   thread=Thread(conversation_id="conv-1", **thread), routed=routed,
                   received_at=T0)


def app_for(store: TicketStore) -> web.Application:
    app = web.Application(middlewares=[auth_middleware(TOKEN)])
    app.add_routes(api_routes(store, reply_channels=ReplyChannels.parse("wechat")))
    return app


async def count(store: TicketStore, table: Any, *conditions: Any) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(
            select(func.count()).select_from(table).where(*conditions))).scalar_one())


async def test_a_multi_decision_makes_a_ticket_per_delivery_sharing_one_message(
        store: TicketStore) -> None:
    first = chat("m-1", brand_a())
    stored = await store.persist(first)

    page = await store.list_tickets(TicketFilter(idempotency_key=first.idempotency_key))
    tickets = {t.desk: t for t in page.items}
    assert sorted(tickets) == ["aftersales", "brand_a", "logistics"]
    owner, copy, helper = tickets["brand_a"], tickets["logistics"], tickets["aftersales"]
    assert owner.id == stored.ticket_id and stored.created_ticket
    assert [(t.role, t.customer_facing) for t in (owner, copy, helper)] == [
        ("owner", True), ("copy", False), ("collaborator", False)]
    assert copy.skill_group == "parcels"
    assert {(link.ticket_id, link.number, link.desk, link.role, link.relation)
            for link in owner.links} == {
        (copy.id, copy.number, "logistics", "copy", "multi"),
        (helper.id, helper.number, "aftersales", "collaborator", "multi")}
    assert {link.ticket_id for link in copy.links} == {owner.id, helper.id}
    assert owner.number + 1 == copy.number and copy.number + 1 == helper.number

    # Stored once, shown on each ticket.
    assert await count(store, MESSAGES) == 1
    for ticket in (owner, copy, helper):
        detail = await store.get_ticket(ticket.number)
        assert detail is not None
        assert [m.idempotency_key for m in detail.messages] == [first.idempotency_key]
    async with store.engine.connect() as conn:
        created = (await conn.execute(
            select(EVENTS.c.desk, EVENTS.c.data).where(EVENTS.c.type == "ticket.created")
            .order_by(EVENTS.c.id))).all()
    assert [(desk, data["role"]) for desk, data in created] == [
        ("brand_a", "owner"), ("logistics", "copy"), ("aftersales", "collaborator")]
    assert created[1].data["primary_ticket_id"] == owner.id

    # Follow-ups (the same conversation, the customer's latest open ticket) join the owner's
    # ticket and make no more; the customer has one ticket of their own.
    again = await store.persist(chat("m-2", brand_a()))
    joined = await store.persist(chat("m-3", join_latest_open=True))
    assert again.ticket_id == joined.ticket_id == owner.id
    assert not again.created_ticket and not joined.created_ticket
    assert await count(store, MESSAGES) == 3
    detail = await store.get_ticket(copy.id)
    assert detail is not None and len(detail.messages) == 3
    customer = await store.get_customer(owner.customer_id)
    assert customer is not None and customer.tickets_count == 1


async def test_a_thread_hint_naming_a_linked_ticket_does_not_lead_there(
        store: TicketStore) -> None:
    await store.persist(chat("m-1", brand_a()))
    page = await store.list_tickets(TicketFilter(desk="logistics"))
    [copy] = page.items

    hinted = await store.persist(message("m-2", email="x@example.com",
                                         thread=Thread(ticket_number=f"#{copy.number}")))

    assert hinted.created_ticket and hinted.ticket_id != copy.id


async def test_primary_secondary_links_its_collaborator_and_closes_it_with_the_primary(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    stored = await store.persist(chat("p-1", primary_secondary()))
    page = await store.list_tickets(TicketFilter(customer_id=stored.customer_id))
    tickets = {t.desk: t for t in page.items}
    assert sorted(tickets) == ["aftersales", "sales"]  # the overflow is a timer, no ticket
    primary, helper = tickets["sales"], tickets["aftersales"]
    assert (primary.role, helper.role, helper.customer_facing) == (
        "primary", "collaborator", False)
    assert [(link.ticket_id, link.relation) for link in helper.links] == [
        (primary.id, "collaborator")]
    assert [(t.kind, t.ref) for t in primary.timers if t.kind == "overflow"] == [
        ("overflow", "regional")]
    assert helper.timers == []

    client = await aiohttp_client(app_for(store))
    for status in ("resolved", "closed"):  # closed only from resolved (issue 17's table)
        response = await client.patch(f"/api/v1/tickets/{primary.id}", headers=AUTH,
                                      json={"status": status})
        assert response.status == 200, await response.text()
    closed = await store.get_ticket(helper.id)
    assert closed is not None and closed.status == "closed"
    async with store.engine.connect() as conn:
        updated = (await conn.execute(
            select(EVENTS.c.ticket_id, EVENTS.c.actor, EVENTS.c.data)
            .where(EVENTS.c.type == "ticket.updated").order_by(EVENTS.c.id))).all()
    assert [(row.ticket_id, row.actor, row.data["status"]) for row in updated] == [
        (primary.id, "agent", "resolved"), (primary.id, "agent", "closed"),
        (helper.id, "system", "closed")]
    assert updated[2].data["reason"] == f"primary ticket {primary.number} closed"


async def test_a_reply_on_a_linked_ticket_is_refused(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    stored = await store.persist(chat("m-1", brand_a()))
    page = await store.list_tickets(TicketFilter(desk="logistics"))
    [copy] = page.items
    client = await aiohttp_client(app_for(store))

    refused = await client.post(f"/api/v1/tickets/{copy.number}/replies", headers=AUTH,
                                json={"text": "internal note?"})
    assert refused.status == 409
    body = await refused.json()
    assert body["error"] == "not_customer_facing" and stored.ticket_id in body["message"]
    assert await count(store, OUTBOX) == 0

    sent = await client.post(f"/api/v1/tickets/{stored.ticket_id}/replies", headers=AUTH,
                             json={"text": "on its way"})
    assert sent.status == 201, await sent.text()
    assert await count(store, OUTBOX) == 1
