"""Satisfaction requests (满意度, issue 17) over HTTP with the test clock, SQLite and PostgreSQL:
one request per agent resolution (none on an auto-resolve unless configured), its link's page
and answers, supersession after a reopen, expiry by its timer, an agent's phone rating."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import orjson
import pytest
import structlog
from aiohttp import web
from sqlalchemy import select

from intake.message import Identity, Thread
from ticket_core.api import api_routes, auth_middleware
from ticket_core.clock import TestClock
from ticket_core.csat_pages import csat_routes
from ticket_core.events import EVENTS
from ticket_core.satisfaction import SatisfactionPolicy
from ticket_core.satisfaction_db import SATISFACTION_REQUESTS
from ticket_core.statements import MESSAGES, OUTBOX, TIMERS
from ticket_core.store import TicketStore

from .builders import message, route
from .test_agents import ADMIN_TOKEN, RULES, Client, bearer, call, make_agent, make_token
from .test_api import ClientFactory

T0 = datetime(2026, 9, 24, 9, 0, tzinfo=UTC)
BASE = "https://help.shop.example"
POLICY = SatisfactionPolicy(
    on_resolve=True, expires_after=timedelta(days=7), subject="请评价工单 {{ticket.number}}",
    text="{{customer.name | default: \"您\"}}，工单 {{ticket.number}} 已解决，请评分："
         "{{satisfaction.url}}",
    public_base_url=BASE, reply_from={"aftersales": "support@shop.example"})
LINK = re.compile(re.escape(BASE) + r"/csat/([A-Za-z0-9_-]+)")


@pytest.fixture
async def client(store: TicketStore, aiohttp_client: ClientFactory) -> Client:
    store.timelines = dataclasses.replace(RULES, satisfaction=POLICY)
    store.clock = TestClock(T0)
    app = web.Application(middlewares=[auth_middleware(ADMIN_TOKEN, store)])
    app.add_routes(api_routes(store))
    app.add_routes(csat_routes(store, per_minute=60, burst=30))
    return await aiohttp_client(app)


async def patch(client: Client, ticket: str, status: str) -> None:
    await call(client, "PATCH", f"/api/v1/tickets/{ticket}", 200, json={"status": status})


async def requests_sent(store: TicketStore) -> list[dict[str, Any]]:
    """The outbox bodies of satisfaction requests, oldest first."""
    async with store.engine.connect() as conn:
        bodies = (await conn.execute(select(OUTBOX.c.body).order_by(OUTBOX.c.id))).scalars()
        sent = [orjson.loads(body) for body in bodies]
    return [body for body in sent if body["kind"] == "satisfaction_request"]


async def tokens(store: TicketStore) -> list[str]:
    return [LINK.search(body["text"]).group(1)  # type: ignore[union-attr]
            for body in await requests_sent(store)]


async def events(store: TicketStore, event_type: str) -> list[dict[str, Any]]:
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(EVENTS.c.data, EVENTS.c.actor).where(
            EVENTS.c.type == event_type).order_by(EVENTS.c.id))).all()
    return [dict(row.data, actor=row.actor) for row in rows]


async def form_ticket(store: TicketStore, key: str = "f1") -> str:
    return str((await store.persist(message(key, routed=route("aftersales")))).ticket_id)


async def test_an_agents_resolution_sends_one_request_by_mail_for_a_form_ticket(
        client: Client, store: TicketStore) -> None:
    ticket = await form_ticket(store)
    detail = await call(client, "GET", f"/api/v1/tickets/{ticket}", 200)
    assert detail["satisfaction"] is None  # no request, no rating

    await patch(client, ticket, "resolved")
    await patch(client, ticket, "resolved")  # the same status again: nothing more
    [sent] = await requests_sent(store)
    # The web form cannot reply: mail from the desk's reply_from to the customer's address.
    assert (sent["channel"], sent["account"], sent["to"]["value"]) == (
        "email", "support@shop.example", "li.wei@example.cn")
    assert sent["subject"] == f"请评价工单 {detail['number']}"
    [token] = await tokens(store)
    assert sent["text"] == (f"Li Wei，工单 {detail['number']} 已解决，请评分："
                            f"{BASE}/csat/{token}")
    assert len(token) >= 43  # 256 random bits, url-safe base64
    async with store.engine.connect() as conn:
        [row] = (await conn.execute(select(SATISFACTION_REQUESTS))).all()
        stored_texts = (await conn.execute(select(MESSAGES.c.text).where(
            MESSAGES.c.kind == "satisfaction_request"))).scalars().all()
        [timer] = (await conn.execute(select(TIMERS).where(
            TIMERS.c.kind == "satisfaction_expiry"))).all()
    assert row.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(row._mapping.values())
    assert [token in text for text in stored_texts] == [False]  # agents see no working link
    assert (timer.ref, timer.due_at, timer.state) == (row.id, T0 + timedelta(days=7), "pending")
    [requested] = await events(store, "satisfaction.requested")
    assert requested["request_id"] == row.id and requested["channel"] == "email"
    assert token not in orjson.dumps(requested).decode()
    detail = await call(client, "GET", f"/api/v1/tickets/{ticket}", 200)
    assert detail["satisfaction"]["request_status"] == "sent"
    assert detail["satisfaction"]["score"] is None
    assert sorted(m["kind"] for m in detail["messages"]) == ["form_submission",
                                                             "satisfaction_request"]


async def test_a_channel_that_replies_carries_its_own_request_and_nobody_reachable_gets_none(
        client: Client, store: TicketStore) -> None:
    chat = str((await store.persist(message(
        "c1", channel="sdk", account="demo-app", kind="message", email=None,
        identities=[Identity(kind="sdk_user", value="demo-app:u-1", verified=True)],
        thread=Thread(conversation_id="sdk-t-9"), routed=route("presales")))).ticket_id)
    # A form ticket on a desk without reply_from: nobody to send it to.
    form = str((await store.persist(message("f2", routed=route("presales")))).ticket_id)
    await patch(client, chat, "resolved")
    await patch(client, form, "resolved")

    [sent] = await requests_sent(store)
    assert (sent["ticket_id"], sent["channel"], sent["account"], sent["to"]) == (
        chat, "sdk", "demo-app", {"kind": "sdk_user", "value": "demo-app:u-1",
                                  "verified": True})
    assert sent["thread"]["conversation_id"] == "sdk-t-9"
    assert (await call(client, "GET", f"/api/v1/tickets/{form}", 200))["satisfaction"] is None


async def test_a_reopen_and_a_new_resolution_supersede_the_first_link(
        client: Client, store: TicketStore) -> None:
    ticket = await form_ticket(store)
    await patch(client, ticket, "resolved")
    await patch(client, ticket, "open")  # reopened
    await patch(client, ticket, "resolved")
    first, second = await tokens(store)

    page = await client.get(f"/csat/{first}")
    assert page.status == 410 and "新的评价链接" in await page.text()
    late = await client.post(f"/csat/{first}", json={"score": 5})
    assert late.status == 410 and (await late.json())["error"] == "superseded"
    assert (await client.get(f"/csat/{second}")).status == 200
    async with store.engine.connect() as conn:
        states = (await conn.execute(select(TIMERS.c.state, TIMERS.c.reason).where(
            TIMERS.c.kind == "satisfaction_expiry").order_by(TIMERS.c.id))).all()
        statuses = (await conn.execute(select(SATISFACTION_REQUESTS.c.status).order_by(
            SATISFACTION_REQUESTS.c.created_at, SATISFACTION_REQUESTS.c.status))).scalars()
        assert sorted(statuses) == ["sent", "superseded"]
    assert [tuple(s) for s in states] == [("done", "superseded"), ("pending", None)]
    second_request = (await events(store, "satisfaction.requested"))[1]
    assert len(second_request["superseded"]) == 1


class _Page(HTMLParser):
    """The tags of a page, and the text of each label by its `for`."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.labels: dict[str, str] = {}
        self.lang: str | None = None
        self._label: str | None = None
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.append((tag, found))
        if tag == "html":
            self.lang = found.get("lang")
        if tag == "label":
            self._label = found.get("for") or ""
            self.labels[self._label] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._label = None

    def handle_data(self, data: str) -> None:
        self.text += data
        if self._label is not None:
            self.labels[self._label] += data


async def test_the_page_is_plain_accessible_html_without_the_tickets_internals(
        client: Client, store: TicketStore) -> None:
    ticket = await form_ticket(store)
    await call(client, "POST", f"/api/v1/tickets/{ticket}/notes", 201,
               json={"text": "内部：客户是竞争对手的员工"})
    await patch(client, ticket, "resolved")
    [token] = await tokens(store)

    response = await client.get(f"/csat/{token}")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    page = _Page()
    page.feed(await response.text())
    assert page.lang == "zh-CN"
    names = [tag for tag, _ in page.tags]
    assert "script" not in names and "form" in names
    [form] = [attrs for tag, attrs in page.tags if tag == "form"]
    assert form["method"] == "post" and "action" not in form  # posts back to this URL
    radios = [attrs for tag, attrs in page.tags if tag == "input" and attrs.get("type") == "radio"]
    assert [(r["name"], r["value"]) for r in radios] == [("score", str(n)) for n in range(1, 6)]
    for radio in radios:  # each star has its label, read without the glyphs
        assert f"{radio['value']} 星" in page.labels[str(radio["id"])]
    assert any(tag == "fieldset" for tag in names) and "legend" in names
    [area] = [attrs for tag, attrs in page.tags if tag == "textarea"]
    assert area["name"] == "comment" and page.labels[str(area["id"])].startswith("留言")
    assert [attrs.get("type") for tag, attrs in page.tags if tag == "button"] == ["submit"]
    assert "竞争对手" not in page.text and "li.wei" not in page.text
    assert token not in await response.text()

    for unknown in ("x" * 43, "short", "%E4%B8%AD" * 6):
        missing = await client.get(f"/csat/{unknown}")
        assert missing.status == 404 and "链接无效" in await missing.text()
    assert (await client.post("/csat/" + "x" * 43, json={"score": 5})).status == 404


async def test_answers_replace_the_score_and_both_stay_in_the_history(
        client: Client, store: TicketStore) -> None:
    ticket = await form_ticket(store)
    await patch(client, ticket, "resolved")
    [token] = await tokens(store)

    for body in ({"score": 6}, {"score": 0}, {"score": "5"}, {"score": True},
                 {"score": 4.5}, {}, {"score": 3, "comment": 7}, {"score": 3, "stars": 3},
                 {"score": 3, "comment": "长" * 2001}, [5]):
        refused = await client.post(f"/csat/{token}", json=body)
        assert refused.status == 422, body
        assert (await refused.json())["error"] == "invalid_body"
    malformed = await client.post(f"/csat/{token}", data=b"{score",
                                  headers={"Content-Type": "application/json"})
    assert malformed.status == 400
    no_star = await client.post(f"/csat/{token}", data={"score": "abc", "comment": "<b>慢</b>"})
    assert no_star.status == 422
    retyped = await no_star.text()
    assert "请选择 1 至 5 星" in retyped and "&lt;b&gt;慢&lt;/b&gt;" in retyped

    assert (await call(client, "GET", f"/api/v1/tickets/{ticket}", 200)
            )["satisfaction"]["score"] is None

    form = await client.post(f"/csat/{token}", data={"score": "2", "comment": "等太久了"})
    assert form.status == 200 and "感谢您的评价" in await form.text()
    store.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    again = await client.get(f"/csat/{token}")
    assert again.status == 200 and "已提交过评价" in await again.text()
    answer = await client.post(f"/csat/{token}", json={"score": 5, "comment": " 后来解决了 "})
    assert answer.status == 200
    assert (await answer.json())["score"] == 5

    satisfaction = (await call(client, "GET", f"/api/v1/tickets/{ticket}", 200)
                    )["satisfaction"]
    assert (satisfaction["score"], satisfaction["comment"], satisfaction["via"],
            satisfaction["request_status"]) == (5, "后来解决了", "web", "answered")
    assert satisfaction["first_answered_at"] == T0.isoformat().replace("+00:00", "Z")
    answered = await events(store, "satisfaction.answered")
    assert [(e["score"], e["previous_score"], e["via"], e["actor"]) for e in answered] == [
        (2, None, "web", "customer"), (5, 2, "web", "customer")]


async def test_the_link_expires_after_expires_after_on_the_test_clock(
        client: Client, store: TicketStore) -> None:
    ticket = await form_ticket(store)
    await patch(client, ticket, "resolved")
    await patch(client, ticket, "closed")  # a closed ticket's link still runs its time
    [token] = await tokens(store)

    await call(client, "POST", "/api/v1/test-clock", 200, json={"advance": "P6DT23H59M"})
    assert (await client.get(f"/csat/{token}")).status == 200
    assert await events(store, "satisfaction.expired") == []
    await call(client, "POST", "/api/v1/test-clock", 200, json={"advance": "PT1M"})

    [expired] = await events(store, "satisfaction.expired")
    assert (expired["answered"], expired["actor"]) == (False, "system:satisfaction_expiry")
    satisfaction = (await call(client, "GET", f"/api/v1/tickets/{ticket}", 200)
                    )["satisfaction"]
    assert satisfaction["request_status"] == "expired"
    page = await client.get(f"/csat/{token}")
    assert page.status == 410 and "已过期" in await page.text()
    late = await client.post(f"/csat/{token}", data={"score": "5"})
    assert late.status == 410


async def test_an_automatic_resolve_asks_only_with_on_auto_resolve(
        client: Client, store: TicketStore) -> None:
    quiet = await form_ticket(store, "quiet")
    await patch(client, quiet, "pending")
    await call(client, "POST", "/api/v1/test-clock", 200, json={"advance": "P7D"})
    assert (await call(client, "GET", f"/api/v1/tickets/{quiet}", 200))["status"] == "resolved"
    assert await requests_sent(store) == []

    store.timelines = dataclasses.replace(
        store.timelines, satisfaction=dataclasses.replace(POLICY, on_auto_resolve=True))
    asked = await form_ticket(store, "asked")
    await patch(client, asked, "pending")
    await call(client, "POST", "/api/v1/test-clock", 200, json={"advance": "P7D"})
    [sent] = await requests_sent(store)
    assert sent["ticket_id"] == asked
    [requested] = await events(store, "satisfaction.requested")
    assert requested["actor"] == "system:auto_resolve"


async def test_an_agent_records_a_phone_rating_in_their_desks(
        client: Client, store: TicketStore) -> None:
    li = await make_agent(client, "LiNa", "aftersales")
    li_token = bearer((await make_token(client, li["id"]))["token"])
    zhao = await make_agent(client, "Zhao", "presales")
    zhao_token = bearer((await make_token(client, zhao["id"]))["token"])
    ticket = await form_ticket(store)
    path = f"/api/v1/tickets/{ticket}/satisfaction"

    assert (await call(client, "POST", path, 404, zhao_token, json={"score": 4})
            )["error"] == "ticket_not_found"
    for body in ({"score": 9}, {"score": "4"}, {"score": 4, "via": "fax"}, {}):
        assert (await call(client, "POST", path, 422, li_token, json=body)
                )["error"] == "invalid_body", body
    recorded = await call(client, "POST", path, 201, li_token,
                          json={"score": 4, "comment": "电话回访：已解决", "via": "phone"})
    assert (recorded["score"], recorded["via"], recorded["request_status"]) == (4, "phone", None)
    shown = (await call(client, "GET", f"/api/v1/tickets/{ticket}", 200))["satisfaction"]
    assert (shown["score"], shown["comment"], shown["via"]) == (4, "电话回访：已解决", "phone")
    [answered] = await events(store, "satisfaction.answered")
    assert answered["actor"].startswith(f"agent:{li['id']} token:")
    assert answered["via"] == "phone" and answered["request_id"] is None


async def test_the_page_is_rate_limited_per_address_and_logs_neither_token_nor_comment(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    store.timelines = dataclasses.replace(RULES, satisfaction=POLICY)
    store.clock = TestClock(T0)
    app = web.Application(middlewares=[auth_middleware(ADMIN_TOKEN, store)])
    app.add_routes(api_routes(store))
    app.add_routes(csat_routes(store, per_minute=1, burst=3))
    client = await aiohttp_client(app)
    ticket = await form_ticket(store)
    with structlog.testing.capture_logs() as logged:
        await patch(client, ticket, "resolved")
        [token] = await tokens(store)
        assert (await client.get(f"/csat/{token}")).status == 200
        assert (await client.post(f"/csat/{token}", data={"score": "1", "comment": "秘密留言"})
                ).status == 200
        assert (await client.get("/csat/" + "y" * 43)).status == 404
        limited = await client.post(f"/csat/{token}", json={"score": 5})
        assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
        assert (await limited.json())["error"] == "rate_limited"
        page = await client.get(f"/csat/{token}")
        assert page.status == 429 and page.headers["Content-Type"].startswith("text/html")
    assert any(line["event"] == "satisfaction_answered" for line in logged)
    dumped = orjson.dumps(logged, default=str).decode()
    assert token not in dumped and "秘密留言" not in dumped
