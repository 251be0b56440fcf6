"""Agent-created tickets (`POST /api/v1/tickets`, issue 17) on SQLite and PostgreSQL: the call
notes become the ticket, on the group's strategy, without an auto reply; `Idempotency-Key`
makes a retry (or two at once) one ticket; every bad input a 422 naming its field; another
desk 403."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from intake.config import load_document
from ticket_core.api import api_routes, auth_middleware
from ticket_core.statements import MESSAGES, OUTBOX, TICKETS
from ticket_core.store import TicketStore
from ticket_core.tickets_config import load_tickets
from ticket_core.timers import Timelines

from .builders import message
from .test_agents import ADMIN, ADMIN_TOKEN, bearer, call
from .test_api import ClientFactory
from .test_timers import events_of

CONFIG = """
desks:
  - {id: aftersales, name: 售后, default_skill_group: sg_aftersales_l1}
  - {id: presales, name: 售前, default_skill_group: sg_presales}
categories:
  - {id: after_sales, name: 售后}
tickets:
  ticket_fields:
    - {key: order_no, label: 订单号, type: text, pattern: "^[0-9]{8}-[0-9]{4}$",
       required: on_create, desks: [aftersales]}
    - {key: refund_amount, label: 退款金额, type: decimal, min: 0, max: 100000}
"""
RULES = Timelines(
    desks=frozenset({"aftersales", "presales"}),
    groups={"sg_aftersales_l1": "aftersales", "sg_aftersales_claim": "aftersales",
            "sg_presales": "presales"},
    default_group={"aftersales": "sg_aftersales_l1", "presales": "sg_presales"},
    strategies={"sg_aftersales_l1": "least_loaded", "sg_aftersales_claim": "claim",
                "sg_presales": "round_robin"})
Client = TestClient[Any, Any]
PHONE_CALL = {"desk": "aftersales", "customer": {"name": "王芳", "identities": [
    {"kind": "phone", "value": "+8613800138000"}, {"kind": "email", "value": "Wang@Example.CN"}]},
    "subject": "电话：退货", "text": "客户来电，订单已签收，想退货。", "priority": "high",
    "category": "after_sales", "tags": ["Phone", " VIP "],
    "fields": {"order_no": "20261206-0001", "refund_amount": "12.5"}}


@pytest.fixture
async def client(store: TicketStore, aiohttp_client: ClientFactory,
                 tmp_path: Path) -> Client:
    path = tmp_path / "intake.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    store.timelines, store.tickets = RULES, load_tickets(load_document(path))
    app = web.Application(middlewares=[auth_middleware(ADMIN_TOKEN, store)])
    app.add_routes(api_routes(store))
    return await aiohttp_client(app)


async def agent(client: Client, name: str, desk: str, groups: list[str]) -> dict[str, Any]:
    made = await call(client, "POST", "/api/v1/agents", 201, json={
        "name": name, "email": f"{name}@shop.example", "role": "agent", "desks": [desk],
        "skill_groups": groups})
    token = await call(client, "POST", "/api/v1/tokens", 201, json={"agent_id": made["id"]})
    made["auth"] = bearer(token["token"])
    await call(client, "PUT", f"/api/v1/agents/{made['id']}/presence", 200,
               json={"status": "online"})
    return made  # type: ignore[no-any-return]


async def create(client: Client, body: dict[str, Any], expect: int = 201,
                 headers: dict[str, str] | None = None, key: str | None = None) -> Any:
    sent = {**(headers or ADMIN), **({"Idempotency-Key": key} if key else {})}
    response = await client.post("/api/v1/tickets", headers=sent, json=body)
    text = await response.text()
    assert response.status == expect, text
    found = await response.json()
    found["_replayed"] = response.headers.get("Idempotent-Replayed")
    return found


async def count(store: TicketStore, table: Any) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_a_phone_call_becomes_an_assigned_ticket_without_an_auto_reply(
        client: Client, store: TicketStore) -> None:
    li = await agent(client, "li", "aftersales", ["sg_aftersales_l1"])
    made = await create(client, PHONE_CALL, headers=li["auth"])
    assert (made["channel"], made["account"], made["desk"], made["skill_group"]) == (
        "api", "console", "aftersales", "sg_aftersales_l1")
    assert (made["priority"], made["category"], made["tags"]) == ("high", "after_sales",
                                                                   ["phone", "vip"])
    assert made["fields"] == {"order_no": "20261206-0001", "refund_amount": "12.5"}
    # Its group's strategy (least_loaded) assigned it to the one online member: open.
    assert (made["assignee_id"], made["status"]) == (li["id"], "open")
    assert made["first_contact_agent_id"] == li["id"]  # the customer reached li first
    [note] = made["messages"]
    assert (note["direction"], note["kind"], note["text"]) == ("in", "message",
                                                              PHONE_CALL["text"])
    assert await count(store, OUTBOX) == 0  # no auto reply for an agent's ticket
    customer = await call(client, "GET", f"/api/v1/customers/{made['customer_id']}", 200)
    assert customer["name"] == "王芳"
    assert {(i["kind"], i["value"], i["verified"]) for i in customer["identities"]} == {
        ("phone", "+8613800138000", False), ("email", "wang@example.cn", False)}
    [created] = await events_of(store, "ticket.created")
    assert created.actor.startswith(f"agent:{li['id']}")
    # Found by search like any ticket, and never offered for `intake route replay`.
    found = await call(client, "GET", "/api/v1/search", 200, params={"q": "退货"})
    assert [t["id"] for t in found["items"]] == [made["id"]]
    assert (await call(client, "GET", "/api/v1/decisions", 200))["items"] == []


async def test_a_known_customer_by_identity_or_id(client: Client, store: TicketStore) -> None:
    known = await store.persist(message(email="wang@example.cn"))
    by_identity = await create(client, {**PHONE_CALL, "customer": {
        "name": "别名", "identities": [{"kind": "email", "value": "WANG@example.cn"}]}})
    assert by_identity["customer_id"] == known.customer_id
    by_id = await create(client, {**PHONE_CALL, "customer": None,
                                  "customer_id": known.customer_id, "desk": "presales",
                                  "fields": {}, "channel": "telephony", "account": "hotline"})
    assert (by_id["customer_id"], by_id["skill_group"], by_id["channel"], by_id["account"]) == (
        known.customer_id, "sg_presales", "telephony", "hotline")
    walk_in = await create(client, {**PHONE_CALL, "customer": {"name": "路人"}})
    assert walk_in["customer_id"] not in (known.customer_id, None)


async def test_the_same_idempotency_key_is_the_same_ticket(client: Client,
                                                           store: TicketStore) -> None:
    first = await create(client, PHONE_CALL, key="call-77")
    again = await create(client, {**PHONE_CALL, "text": "重试"}, key="call-77")
    assert again["id"] == first["id"] and again["_replayed"] == "true"
    assert first["_replayed"] is None
    other = await create(client, PHONE_CALL, key="call-78")
    assert other["id"] != first["id"]
    both = await asyncio.gather(*(create(client, PHONE_CALL, key="call-79") for _ in range(4)))
    assert len({t["id"] for t in both}) == 1
    assert await count(store, TICKETS) == 3 and await count(store, MESSAGES) == 3
    async with store.engine.connect() as conn:
        key = (await conn.execute(select(MESSAGES.c.idempotency_key).where(
            MESSAGES.c.ticket_id == first["id"]))).scalar_one()
    assert key == "api:console:admin:call-77"
    bad = await create(client, PHONE_CALL, 400, key="x" * 201)
    assert bad["error"] == "invalid_header"


@pytest.mark.parametrize(("change", "code", "field"), [
    ({"desk": "nowhere"}, "invalid_body", "desk"),
    ({"skill_group": "sg_presales"}, "invalid_body", "skill_group"),
    ({"fields": {}}, "invalid_fields", "fields.order_no"),  # required on_create
    ({"fields": {"order_no": "123"}}, "invalid_fields", "fields.order_no"),
    ({"fields": {"order_no": "20261206-0001", "colour": "red"}}, "invalid_fields",
     "fields.colour"),
    ({"tags": ["x" * 60]}, "invalid_tags", "tags.0"),
    ({"category": "gossip"}, "unknown_category", "category"),
    ({"customer_id": "no-such-customer", "customer": None}, "invalid_body", "customer_id"),
    ({"customer_id": "c1"}, "invalid_body", "body"),  # both
    ({"text": "   "}, "invalid_body", "body"),
    ({"priority": "asap"}, "invalid_body", "priority"),
    ({"channel": "fax"}, "invalid_body", "channel"),
    ({"customer": {"identities": [{"kind": "fax", "value": "1"}]}}, "invalid_body",
     "customer.identities.0.kind"),
])
async def test_bad_input_is_422_naming_the_field(client: Client, store: TicketStore,
                                                 change: dict[str, Any], code: str,
                                                 field: str) -> None:
    refused = await create(client, {**PHONE_CALL, **change}, 422)
    assert refused["error"] == code and field in refused["fields"], refused
    assert await count(store, TICKETS) == 0


async def test_another_desk_is_403_and_no_json_is_400_or_422(client: Client,
                                                             store: TicketStore) -> None:
    presales = await agent(client, "zhang", "presales", ["sg_presales"])
    refused = await create(client, PHONE_CALL, 403, presales["auth"])
    assert refused["error"] == "desk_not_in_scope"
    response = await client.post("/api/v1/tickets", headers=ADMIN, data=b"{nope")
    assert response.status in (400, 422)
    assert await count(store, TICKETS) == 0


async def test_an_agent_created_ticket_runs_its_desks_sla_from_the_call(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    """No router decision: the desk's policy (`standard` on `cn_office`) starts at the call's
    time. Thursday 2026-09-24 17:00 before Mid-autumn, normal (2h): due Monday 10:00."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from ticket_core.clock import ManualClock

    example = Path(__file__).resolve().parents[2] / "deploy" / "intake.example.yaml"
    document = load_document(example)
    shanghai = ZoneInfo("Asia/Shanghai")
    store.clock = ManualClock(datetime(2026, 9, 24, 17, 0, tzinfo=shanghai))
    store.timelines, store.tickets = Timelines.from_document(document), load_tickets(document)
    app = web.Application(middlewares=[auth_middleware(ADMIN_TOKEN, store)])
    app.add_routes(api_routes(store))
    client = await aiohttp_client(app)
    made = await call(client, "POST", "/api/v1/tickets", 201, json={
        "desk": "aftersales", "customer": {"name": "王芳", "identities": [
            {"kind": "phone", "value": "+8613800138000"}]},
        "text": "客户来电：想退货", "priority": "normal",
        "fields": {"order_no": "20260924-0001"}})
    sla = made["sla"]
    assert sla is not None and sla["policy"] == "standard", sla
    due = datetime.fromisoformat(sla["first_response_due_at"]).astimezone(shanghai)
    assert due == datetime(2026, 9, 28, 10, 0, tzinfo=shanghai), sla
