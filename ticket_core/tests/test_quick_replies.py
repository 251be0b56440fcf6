"""Quick replies over HTTP (issue 17): the config's read-only, supervisors' own for their
desks, desk-scoped search, and rendering with the kernel's one-pass placeholders (SQLite and
PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ticket_core.api import api_routes, auth_middleware
from ticket_core.store import TicketStore

from .builders import message, route
from .test_agents import ADMIN, ADMIN_TOKEN, RULES, Client, bearer, call, make_agent, make_token
from .test_api import ClientFactory
from .test_fields import tickets_config

CONFIG = """\
desks:
  - {id: aftersales, name: 售后}
  - {id: presales, name: 售前}
tickets:
  ticket_fields:
    - {key: order_no, label: 订单号, type: text, pattern: "^[0-9]{8}-[0-9]{4}$"}
  customer_fields:
    - {key: member_level, label: 会员等级, type: select, options: [normal, vip]}
  quick_replies:
    - id: greet
      title: 问候
      shortcut: /hi
      text: '{{customer.name | default: "您"}}好，我是{{agent.name}}，很高兴为您服务。'
    - id: tracking
      title: 物流单号
      desks: [aftersales]
      text: 您的订单 {{ticket.fields.order_no}} 已发货，快递单号 {{input.tracking_no}}。
"""


@pytest.fixture
async def client(store: TicketStore, aiohttp_client: ClientFactory, tmp_path: Path) -> Client:
    store.timelines = RULES
    store.tickets = tickets_config(tmp_path, CONFIG)
    app = web.Application(middlewares=[auth_middleware(ADMIN_TOKEN, store)])
    app.add_routes(api_routes(store))
    return await aiohttp_client(app)


async def agent_headers(client: Client, name: str, desk: str, role: str = "agent",
                        ) -> dict[str, str]:
    agent = await make_agent(client, name, desk, role=role)
    return bearer((await make_token(client, agent["id"]))["token"])


def render_path(ticket_id: str, reply_id: str) -> str:
    return f"/api/v1/tickets/{ticket_id}/quick-replies/{reply_id}/render"


async def test_the_configs_replies_render_once_for_the_callers_agent(
        client: Client, store: TicketStore) -> None:
    li = await make_agent(client, "LiNa", "aftersales")
    li_token = bearer((await make_token(client, li["id"]))["token"])
    await call(client, "PATCH", f"/api/v1/agents/{li['id']}", 200, json={"name": "李娜"})
    plain = await store.persist(message("p1", routed=route("aftersales"), name="王芳"))
    sly = await store.persist(message("p2", routed=route("aftersales"), name="{{agent.name}}",
                                      email="sly@example.cn"))
    nameless = await store.persist(message("p3", routed=route("aftersales"), name=None,
                                           email="anon@example.cn"))
    greet = [(t.ticket_id, await call(client, "POST", render_path(t.ticket_id, "greet"), 200,
                                      li_token, json={}))
             for t in (plain, sly, nameless)]
    assert [g["text"] for _, g in greet] == [
        "王芳好，我是李娜，很高兴为您服务。",
        "{{agent.name}}好，我是李娜，很高兴为您服务。",  # a value is never a template again
        "您好，我是李娜，很高兴为您服务。"]
    # The admin token is no agent: {{agent.name}} has no value and no default.
    refused = await call(client, "POST", render_path(plain.ticket_id, "greet"), 422, ADMIN,
                         json={})
    assert refused["error"] == "unresolved_placeholders"
    assert list(refused["fields"]) == ["agent.name"]


async def test_missing_values_are_named_never_left_as_holes(
        client: Client, store: TicketStore) -> None:
    token = await agent_headers(client, "LiNa", "aftersales")
    ticket = await store.persist(message("t1", routed=route("aftersales")))
    path = render_path(ticket.ticket_id, "tracking")
    refused = await call(client, "POST", path, 422, token, json={"inputs": {}})
    assert refused["error"] == "unresolved_placeholders"
    assert list(refused["fields"]) == ["ticket.fields.order_no", "input.tracking_no"]
    assert "ticket.fields.order_no" in refused["message"]
    await call(client, "PATCH", f"/api/v1/tickets/{ticket.ticket_id}", 200,
               json={"fields": {"order_no": "20261001-0001"}})
    rendered = await call(client, "POST", path, 200, token,
                          json={"inputs": {"tracking_no": "SF{{ticket.number}}"}})
    assert rendered == {"text": "您的订单 20261001-0001 已发货，快递单号 SF{{ticket.number}}。"}
    # A reply for another desk is not offered on this ticket; an unknown one neither.
    presales = await store.persist(message("t2", routed=route("presales", skill_group=None),
                                           email="pre@example.cn"))
    for ticket_id, reply_id in ((presales.ticket_id, "tracking"), (ticket.ticket_id, "nope")):
        missing = await call(client, "POST", render_path(ticket_id, reply_id), 404,
                             json={"inputs": {"tracking_no": "1"}})
        assert missing["error"] == "quick_reply_not_found"
    await call(client, "POST", path, 422, token, json={"inputs": {"tracking_no": 5}})


async def test_supervisors_manage_their_desks_replies_and_search_is_desk_scoped(
        client: Client, store: TicketStore) -> None:
    boss = await agent_headers(client, "Boss", "aftersales", role="supervisor")
    agent = await agent_headers(client, "LiNa", "aftersales")
    presales = await agent_headers(client, "Zhao", "presales", role="supervisor")
    body = {"title": "退款进度", "shortcut": "/tk", "desks": ["aftersales"],
            "text": '{{customer.name | default: "您"}}好，退款将在 3 个工作日内到账。'}
    forbidden = await call(client, "POST", "/api/v1/quick-replies", 403, agent, json=body)
    assert forbidden["error"] == "forbidden"
    other_desk = await call(client, "POST", "/api/v1/quick-replies", 403, presales, json=body)
    assert other_desk["error"] == "forbidden"
    every_desk = await call(client, "POST", "/api/v1/quick-replies", 403, boss,
                            json={**body, "desks": []})
    assert every_desk["error"] == "forbidden"
    bad = await call(client, "POST", "/api/v1/quick-replies", 422, boss,
                     json={**body, "text": "您好 {{customer.nmae}} {{ticket.fields.colour}}"})
    assert bad["error"] == "invalid_placeholders"
    assert "customer.nmae" in bad["message"] and "colour" in bad["message"]
    await call(client, "POST", "/api/v1/quick-replies", 422, boss,
               json={**body, "desks": ["nowhere"]})
    created = await call(client, "POST", "/api/v1/quick-replies", 201, boss, json=body)
    assert created["source"] == "api" and created["desks"] == ["aftersales"]
    assert created["created_by"].startswith("agent:")

    def ids(page: dict[str, Any]) -> list[str]:
        return [item["id"] for item in page["items"]]

    assert ids(await call(client, "GET", "/api/v1/quick-replies", 200, agent)) == [
        "greet", "tracking", created["id"]]
    assert ids(await call(client, "GET", "/api/v1/quick-replies?q=退款", 200, agent)) == [
        created["id"]]
    assert ids(await call(client, "GET", "/api/v1/quick-replies?q=/HI", 200, agent)) == [
        "greet"]
    assert ids(await call(client, "GET", "/api/v1/quick-replies?q=快递单号", 200,
                          agent)) == ["tracking"]
    # The presales supervisor sees the replies for every desk only, and not another desk's.
    assert ids(await call(client, "GET", "/api/v1/quick-replies", 200, presales)) == ["greet"]
    outside = await call(client, "GET", "/api/v1/quick-replies?desk=aftersales", 403, presales)
    assert outside["error"] == "desk_not_in_scope"
    assert ids(await call(client, "GET", "/api/v1/quick-replies?desk=presales", 200,
                          ADMIN)) == ["greet"]
    page = await call(client, "GET", "/api/v1/quick-replies?limit=2", 200, agent)
    assert ids(page) == ["greet", "tracking"] and page["next"]
    rest = await call(client, "GET", f"/api/v1/quick-replies?limit=2&cursor={page['next']}",
                      200, agent)
    assert ids(rest) == [created["id"]] and rest["next"] is None
    await call(client, "GET", "/api/v1/quick-replies?sort=title", 400, agent)

    path = f"/api/v1/quick-replies/{created['id']}"
    assert (await call(client, "PATCH", path, 404, presales, json={"title": "x"}))[
        "error"] == "quick_reply_not_found"
    changed = await call(client, "PATCH", path, 200, boss,
                         json={"title": "退款到账", "shortcut": None})
    assert changed["title"] == "退款到账" and changed["shortcut"] is None
    await call(client, "PATCH", path, 422, boss, json={"text": "{{agent.nmae}}"})
    for method in ("PATCH", "DELETE"):
        read_only = await call(client, method, "/api/v1/quick-replies/greet", 409, ADMIN,
                               json={"title": "x"})
        assert read_only["error"] == "read_only"
    await call(client, "DELETE", path, 403, agent)
    await call(client, "DELETE", path, 204, boss)
    await call(client, "DELETE", path, 404, boss)
    assert ids(await call(client, "GET", "/api/v1/quick-replies", 200, agent)) == [
        "greet", "tracking"]
