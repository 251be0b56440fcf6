"""Ticket search on SQLite (FTS5) and PostgreSQL (tsvector): the same corpus, the same answers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import text

from intake.message import Identity, Thread
from ticket_core.api import api_routes, auth_middleware
from ticket_core.db import make_engine, migrate
from ticket_core.replies import ReplyChannels
from ticket_core.search import search_tickets
from ticket_core.search_index import reindex_all
from ticket_core.store import TicketStore

from .builders import message, route

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]

# subject, text, desk, customer name, email: a Chinese, English and mixed corpus.
CORPUS = {
    "signed": ("物流查询", "我要退款，订单已签收", "aftersales", "张三", "zhang.san@example.cn"),
    "traditional": ("退貨申請", "商品有瑕疵，請盡快處理", "aftersales", "陳大文",
                    "chan@example.hk"),
    "refund": ("Refund request", "Order SF1234567 arrived damaged, please refund.",
               "presales", "Mary Smith", "mary@example.com"),
    "invoice": ("发票", "请开具发票，订单号 20261206-0001", "presales", "李四", "li.si@example.cn"),
    "fullwidth": ("ＳＦ１２３ 全角", "全角单号", "aftersales", "王五", "wang@example.cn"),
    "english": ("Invoice", "Shipping was fast, thanks", "presales", "Bob", "bob@example.com"),
    "single": ("问题", "我想退一件", "aftersales", "赵六", "zhao@example.cn"),
    "kana": ("お問い合わせ", "カタカナ 한국어 문의", "aftersales", "Kim", "kim@example.kr"),
    "html": ("<b>退款</b>", "<script>alert(1)</script> & 退款", "aftersales", "X", "x@example.io"),
}


@pytest.fixture
async def corpus(store: TicketStore) -> dict[str, str]:
    """The corpus persisted a minute apart (oldest first): name → ticket id."""
    ids: dict[str, str] = {}
    for index, (name, (subject, body, desk, customer, email)) in enumerate(CORPUS.items()):
        result = await store.persist(message(
            f"c-{name}", subject=subject, text=body, name=customer, email=email,
            routed=route(desk), received_at=T0 + timedelta(minutes=index)))
        assert result.ticket_id is not None
        ids[name] = result.ticket_id
    return ids


def app_for(store: TicketStore) -> web.Application:
    app = web.Application(middlewares=[auth_middleware(TOKEN)])
    app.add_routes(api_routes(store, reply_channels=ReplyChannels.parse("email")))
    return app


async def find(store: TicketStore, q: str, **filters: Any) -> list[str]:
    from intake.search_text import parse_query

    page = await search_tickets(store, parse_query(q), limit=200, **filters)
    assert page.next is None
    return [hit.id for hit in page.items]


def names(ids: dict[str, str], found: list[str]) -> set[str]:
    by_id = {ticket_id: name for name, ticket_id in ids.items()}
    return {by_id[ticket_id] for ticket_id in found}


@pytest.mark.parametrize(("q", "expected"), [
    ("退款", {"signed", "html"}),  # a two-character word inside a sentence
    ("退货", {"traditional"}),  # Simplified finds Traditional
    ("退貨", {"traditional"}),
    ("發票", {"invoice"}),
    ("退", {"signed", "traditional", "single", "html"}),  # one common character
    ("签收", {"signed"}),
    ("订单已签收", {"signed"}),
    ("订单 退款", {"signed"}),  # every word
    ("订单", {"signed", "invoice"}),
    ("已退款", set()),  # adjacency: 已 and 退款 are both there, apart
    ("sf123", {"refund", "fullwidth"}),  # a prefix of SF1234567, and full-width ＳＦ１２３
    ("ＳＦ１２３", {"refund", "fullwidth"}),
    ("SF12345", {"refund"}),
    ("2026120", {"invoice"}),  # an order number by prefix
    ("20261206-0001", {"invoice"}),
    ("refund", {"refund"}),
    ("REFUNDS", set()),
    ("request refund", {"refund"}),  # both words, anywhere
    ('"refund request"', {"refund"}),  # adjacent, in order
    ('"request refund"', set()),
    ('"please refund"', {"refund"}),
    ("invoice", {"english"}),
    ("张三", {"signed"}),  # the customer's name
    ("zhang.san@example.cn", {"signed"}),  # an identity
    ("한국", {"kana"}),
    ("カタ", {"kana"}),
    ("问", {"single", "kana"}),  # 問 folds to 问
])
async def test_the_corpus_answers_alike_on_both_databases(
        store: TicketStore, corpus: dict[str, str], q: str, expected: set[str]) -> None:
    assert names(corpus, await find(store, q)) == expected


async def test_the_number_finds_its_ticket(store: TicketStore, corpus: dict[str, str]) -> None:
    ticket = await store.get_ticket(corpus["english"])
    assert ticket is not None
    assert corpus["english"] in await find(store, f"#{ticket.number}")


BOTH = {"signed", "html"}


@pytest.mark.parametrize(("q", "expected"), [
    ('"退款" OR 1=1', set()), ("NEAR(", set()), ("*", set()), ('"', set()), ("&|!:", set()),
    ("退款 AND NOT", set()), ("'; DROP TABLE tickets; --", set()), ("\\", set()),
    ("退款\x00", BOTH), ("(((", set()), ('"退款', BOTH), ('退款"', BOTH),
    ("{subject}: 退款", set()), ("^退款", BOTH), ("退款 -订单", {"signed"}), ("''", set()),
    ("!!退款", BOTH), ("<->", set()), ("退款*", BOTH), ("NEAR(退款 订单)", set()),
    ("a:*", None), ("1 <-> 2", None),
])
async def test_query_syntax_is_data(store: TicketStore, corpus: dict[str, str], q: str,
                                    expected: set[str] | None) -> None:
    """Operators of FTS5 and tsquery are separators: only the words are searched."""
    found = names(corpus, await find(store, q))
    if expected is not None:
        assert found == expected


async def test_desk_status_and_scope_filter_the_same_query(
        store: TicketStore, corpus: dict[str, str]) -> None:
    assert names(corpus, await find(store, "订单", desk="presales")) == {"invoice"}
    async with store.engine.begin() as connection:
        await connection.execute(text("UPDATE tickets SET status = 'resolved' WHERE id = :id"),
                                 {"id": corpus["invoice"]})
    assert names(corpus, await find(store, "订单", statuses=("open",))) == {"signed"}
    assert names(corpus, await find(store, "订单", statuses=("resolved",))) == {"invoice"}
    assert names(corpus, await find(store, "退", desks=["presales"])) == set()
    assert names(corpus, await find(store, "订单", desks=["presales", "other"])) == {"invoice"}
    assert await find(store, "订单", desks=[]) == []


async def test_more_hits_rank_first_then_the_newer_ticket(store: TicketStore) -> None:
    once = await store.persist(message("once", subject="售后", text="退款 请问 物流 好的",
                                       received_at=T0 + timedelta(hours=1)))
    thrice = await store.persist(message("thrice", subject="售后", text="退款 退款 退款 好的",
                                         received_at=T0))
    later = await store.persist(message("later", subject="售后", text="退款 请问 物流 好的",
                                        received_at=T0 + timedelta(hours=2)))
    assert await find(store, "退款") == [thrice.ticket_id, later.ticket_id, once.ticket_id]


async def test_cursor_pages_never_repeat_or_skip(store: TicketStore) -> None:
    from intake.search_text import parse_query

    created = set()
    for i in range(7):
        result = await store.persist(message(f"p{i}", subject="发票", text="请开发票",
                                             received_at=T0 + timedelta(minutes=i % 3)))
        created.add(result.ticket_id)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await search_tickets(store, parse_query("发票"), limit=3, cursor=cursor)
        seen += [hit.id for hit in page.items]
        cursor = page.next
        if cursor is None:
            break
    assert len(seen) == 7 and set(seen) == created


async def test_a_reply_and_a_customer_rename_are_searchable_at_once(
        store: TicketStore, corpus: dict[str, str], aiohttp_client: ClientFactory) -> None:
    mail = await store.persist(message("mail", channel="email", account="support@example.com",
                                       kind="message", email="bob@example.com", name="Bob",
                                       subject="Parcel", text="Where is it?", routed=route()))
    client = await aiohttp_client(app_for(store))
    response = await client.post(f"/api/v1/tickets/{mail.ticket_id}/replies", headers=AUTH,
                                 json={"text": "已为您办理换货"})
    assert response.status == 201, await response.text()
    assert await find(store, "换货") == [mail.ticket_id]
    response = await client.patch(f"/api/v1/customers/{mail.customer_id}", headers=AUTH,
                                  json={"name": "欧阳娜娜"})
    assert response.status == 200, await response.text()
    # Bob's tickets (the corpus's "english" one too, same address): found by the new name.
    assert set(await find(store, "欧阳")) == {mail.ticket_id, corpus["english"]}


async def test_concurrent_messages_and_renames_leave_every_text_searchable(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    """On PostgreSQL these run in parallel transactions; each one's text ends in the
    document (search_index.py locks the tickets before reading their sources)."""
    first = await store.persist(message("race", email="race@example.com", text="第一封"))
    client = await aiohttp_client(app_for(store))

    async def follow_up(i: int) -> None:
        await store.persist(message(f"race-{i}", email="race@example.com",
                                    text=f"补充{i} more{i}x",
                                    thread=Thread(ticket_id=first.ticket_id)))

    async def rename(i: int) -> None:
        response = await client.patch(f"/api/v1/customers/{first.customer_id}", headers=AUTH,
                                      json={"name": f"name{i}x"})
        assert response.status == 200, await response.text()

    for i in range(8):
        await asyncio.gather(follow_up(i), rename(i), follow_up(100 + i))
    for i in [*range(8), *range(100, 108)]:
        assert await find(store, f"more{i}x") == [first.ticket_id], i
    assert await find(store, "name7x") == [first.ticket_id]


async def test_a_follow_up_message_and_a_new_identity_are_indexed(
        store: TicketStore) -> None:
    other = await store.persist(message("f0", email="n@example.cn", text="另一个问题"))
    first = await store.persist(message("f1", email="n@example.cn", text="第一封"))
    await store.persist(message("f2", text="补充：发票抬头",
                                identities=[Identity(kind="email", value="n@example.cn"),
                                            Identity(kind="phone", value="+8613912345678")],
                                thread=Thread(ticket_id=first.ticket_id)))
    assert await find(store, "抬头") == [first.ticket_id]
    # The phone joined the customer: each of their tickets finds it, with or without +86.
    assert set(await find(store, "13912345678")) == {first.ticket_id, other.ticket_id}
    assert set(await find(store, "+8613912345678")) == {first.ticket_id, other.ticket_id}


async def test_reindex_rebuilds_every_document(store: TicketStore,
                                               corpus: dict[str, str]) -> None:
    async with store.engine.begin() as connection:
        await connection.execute(text("DELETE FROM search_documents"))
    assert await find(store, "退款") == []
    assert await reindex_all(store, batch=4) == len(CORPUS)
    assert names(corpus, await find(store, "退款")) == {"signed", "html"}
    assert await reindex_all(store) == len(CORPUS)  # again: the same documents
    assert names(corpus, await find(store, "退货")) == {"traditional"}


# ---- the endpoint ----------------------------------------------------------------------------

async def test_the_endpoint_answers_ticket_views_with_marked_snippets(
        store: TicketStore, corpus: dict[str, str], aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(app_for(store))
    response = await client.get("/api/v1/search", headers=AUTH, params={"q": "退款"})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["next"] is None
    by_id = {item["id"]: item for item in body["items"]}
    assert set(by_id) == {corpus["signed"], corpus["html"]}
    signed = by_id[corpus["signed"]]
    assert signed["subject"] == "物流查询" and signed["desk"] == "aftersales"
    assert {"number", "status", "customer_id", "tags", "created_at"} <= set(signed)
    assert "我要<mark>退款</mark>，订单已签收" in signed["snippet"]
    snippet = by_id[corpus["html"]]["snippet"]
    assert "&lt;script&gt;" in snippet and "<script>" not in snippet
    assert "<mark>退款</mark>" in snippet

    response = await client.get("/api/v1/search", headers=AUTH, params={"q": "退貨"})
    [item] = (await response.json())["items"]
    assert "<mark>退貨</mark>" in item["snippet"]


async def test_the_endpoint_pages_and_filters(
        store: TicketStore, corpus: dict[str, str], aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(app_for(store))
    seen: list[str] = []
    params = {"q": "退", "limit": "1", "status": "open", "desk": "aftersales"}
    while True:
        response = await client.get("/api/v1/search", headers=AUTH, params=params)
        assert response.status == 200, await response.text()
        body = await response.json()
        seen += [item["id"] for item in body["items"]]
        if body["next"] is None:
            break
        params["cursor"] = body["next"]
    assert names(corpus, seen) == {"signed", "traditional", "single", "html"}
    assert len(seen) == 4


@pytest.mark.parametrize(("params", "status", "code"), [
    ({"q": "x" * 1001}, 422, "query_too_long"),
    ({"q": " ".join(str(i) for i in range(210))}, 422, "query_too_long"),  # 210 words
    ({"q": "退款" * 60}, 422, "query_too_long"),  # 120 characters, 239 tokens
    ({}, 400, "invalid_parameter"),
    ({"q": "  "}, 400, "invalid_parameter"),
    ({"q": "退款", "limit": "0"}, 400, "invalid_parameter"),
    ({"q": "退款", "status": "nope"}, 400, "invalid_parameter"),
    ({"q": "退款", "cursor": "bm90IGEgY3Vyc29y"}, 400, "invalid_parameter"),
    ({"q": "退款", "cursor": "WzEsMiwzXQ"}, 400, "invalid_parameter"),
    ({"q": "退款", "sort": "x"}, 400, "invalid_parameter"),
])
async def test_bad_searches_are_refused_with_their_reason(
        store: TicketStore, aiohttp_client: ClientFactory, params: dict[str, str],
        status: int, code: str) -> None:
    client = await aiohttp_client(app_for(store))
    response = await client.get("/api/v1/search", headers=AUTH, params=params)
    assert response.status == status, await response.text()
    assert (await response.json())["error"] == code


@pytest.mark.parametrize("q", ['"退款" OR 1=1', "NEAR(", "*", '"', "&|!:", "退款" * 40,
                               "%", "_", "\u202e退款", "🙂", "ﾃｽﾄ"])
async def test_attacks_over_http_answer_a_page(
        store: TicketStore, corpus: dict[str, str], aiohttp_client: ClientFactory,
        q: str) -> None:
    client = await aiohttp_client(app_for(store))
    response = await client.get("/api/v1/search", headers=AUTH, params={"q": q})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert isinstance(body["items"], list) and "next" in body


async def test_ten_thousand_characters_are_refused_never_a_500(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    """Over GET the HTTP server refuses a request line over 8,190 bytes itself (a plain 400,
    as the OpenAPI document says); whatever gets through is cut by `parse_query` (422)."""
    client = await aiohttp_client(app_for(store))
    for q in ("x" * 10_000, "退" * 10_000):
        response = await client.get("/api/v1/search", headers=AUTH, params={"q": q})
        assert response.status == 400
    from intake.search_text import QueryTooLong, parse_query

    with pytest.raises(QueryTooLong):
        parse_query("退款" * 5_000)


async def test_search_needs_the_token(store: TicketStore,
                                      aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(app_for(store))
    response = await client.get("/api/v1/search", params={"q": "退款"})
    assert response.status == 401


# ---- the command -----------------------------------------------------------------------------

@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_intake_search_reindex_rebuilds_the_index(database_url: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from intake.cli import main

    async def seed() -> None:
        await migrate(database_url)
        engine = make_engine(database_url)
        store = TicketStore(engine)
        await store.persist(message("cli", text="我要退款"))
        async with engine.begin() as connection:
            await connection.execute(text("DELETE FROM search_documents"))
        await store.close()
        await engine.dispose()

    async def count(q: str) -> int:
        from intake.search_text import parse_query

        engine = make_engine(database_url)
        store = TicketStore(engine)
        try:
            return len((await search_tickets(store, parse_query(q))).items)
        finally:
            await store.close()
            await engine.dispose()

    asyncio.run(seed())
    assert asyncio.run(count("退款")) == 0
    monkeypatch.setenv("INTAKE_DATABASE_URL", database_url)
    monkeypatch.setenv("INTAKE_DATA_DIR", str(tmp_path / "data"))
    assert main(["search", "reindex"]) == 0
    assert "1 ticket" in capsys.readouterr().out
    assert asyncio.run(count("退款")) == 1
    assert os.environ["INTAKE_DATABASE_URL"] == database_url


async def test_notes_tags_and_ticket_fields_are_searchable_once_written(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    from intake.config import load_document
    from ticket_core.tickets_config import load_tickets

    store.tickets = load_tickets(load_document(
        Path(__file__).resolve().parents[2] / "deploy" / "intake.example.yaml"))
    stored = await store.persist(message("c-notes", text="我要退款，订单已签收",
                                         routed=route("aftersales")))
    client = await aiohttp_client(app_for(store))
    url = f"/api/v1/tickets/{stored.ticket_id}"
    note = await client.post(f"{url}/notes", headers=AUTH, json={"text": "客户来电催促仓库复核"})
    assert note.status == 201
    patch = await client.patch(url, headers=AUTH, json={"add_tags": ["加急"],
                                                        "fields": {"order_no": "20261001-0042"}})
    assert patch.status == 200, await patch.text()
    for query in ("仓库复核", "加急", "20261001-0042"):
        found = await client.get("/api/v1/search", headers=AUTH, params={"q": query})
        assert [t["id"] for t in (await found.json())["items"]] == [stored.ticket_id], query
