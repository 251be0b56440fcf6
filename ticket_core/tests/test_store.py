"""TicketStore on SQLite and PostgreSQL: persistence, identities, threading, queries."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event, func, select, text, update

from intake.errors import StorageUnavailable, Transient
from intake.message import Attachment, Call, Event, Form, Identity, RouteDelivery, Thread
from ticket_core import db
from ticket_core.store import (
    CursorInvalid,
    TicketFilter,
    TicketStore,
    decode_cursor,
    encode_cursor,
)
from ticket_core.writes import SqliteWriteStatements

from .builders import message, route


async def count(store: TicketStore, table: str) -> int:
    async with store.engine.connect() as connection:
        return int((await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def set_status(store: TicketStore, ticket_id: str, status: str) -> None:
    async with store.engine.begin() as connection:
        await connection.execute(update(db.Ticket).where(db.Ticket.id == ticket_id)
                                 .values(status=status))


# ---- persisting ------------------------------------------------------------------------------

async def test_persist_creates_customer_ticket_and_message(store: TicketStore) -> None:
    m = message("a1", routed=route("aftersales", skill_group="returns", priority="high",
                                   category="complaint", tags=["vip"]),
                form=Form(form_id="contact", fields={"email": "li.wei@example.cn"}),
                channel_data={"reference": "WF-7Q2K"})

    result = await store.persist(m)

    assert result.created_ticket and not result.duplicate
    assert result.ticket_number == 1001
    assert result.message_id == str(m.id)
    ticket = await store.get_ticket(result.ticket_id or "")
    assert ticket is not None
    assert (ticket.number, ticket.channel, ticket.account, ticket.status) == (
        1001, "webform", "contact", "new")
    assert (ticket.desk, ticket.skill_group, ticket.priority, ticket.category, ticket.tags) == (
        "aftersales", "returns", "high", "complaint", ["vip"])
    assert ticket.subject == "Where is my order?"
    assert ticket.customer_id == result.customer_id
    assert ticket.route is not None and ticket.route["route"] == "r1"
    assert ticket.created_at.tzinfo is not None
    [stored] = ticket.messages
    assert stored.id == str(m.id)
    assert (stored.direction, stored.kind, stored.text) == ("in", "form_submission", m.text)
    assert stored.idempotency_key == "webform:contact:a1"
    assert stored.form == {"form_id": "contact", "fields": {"email": "li.wei@example.cn"}}
    assert stored.reference == "WF-7Q2K"
    assert stored.received_at == m.received_at
    customer = await store.get_customer(result.customer_id)
    assert customer is not None and customer.name == "Li Wei"
    assert [(i.kind, i.value, i.verified) for i in customer.identities] == [
        ("email", "li.wei@example.cn", False)]


async def test_ticket_without_route_has_no_desk_and_normal_priority(store: TicketStore) -> None:
    result = await store.persist(message(subject=None, text="\n  first line \nsecond"))
    ticket = await store.get_ticket(result.ticket_id or "")
    assert ticket is not None
    assert (ticket.desk, ticket.skill_group, ticket.priority, ticket.route) == (
        None, None, "normal", None)
    assert ticket.subject == "first line"


async def test_owner_delivery_names_the_desk_not_a_copy(store: TicketStore) -> None:
    decision = route(deliveries=[RouteDelivery(desk="sales", role="copy"),
                                 RouteDelivery(desk="aftersales", skill_group="vip")])
    result = await store.persist(message(routed=decision))
    ticket = await store.get_ticket(result.ticket_id or "")
    assert ticket is not None and (ticket.desk, ticket.skill_group) == ("aftersales", "vip")


async def test_same_email_twice_is_one_customer_with_two_tickets(store: TicketStore) -> None:
    first = await store.persist(message(email="li.wei@example.cn"))
    second = await store.persist(message(email="Li.Wei@Example.CN"))

    assert second.customer_id == first.customer_id
    assert second.created_ticket and second.ticket_id != first.ticket_id
    assert second.ticket_number == 1002
    assert await count(store, "customers") == 1
    assert await count(store, "customer_identities") == 1


async def test_new_identities_join_the_found_customer(store: TicketStore) -> None:
    first = await store.persist(message(email="a@example.com"))
    second = await store.persist(message(identities=[
        Identity(kind="email", value="a@example.com"),
        Identity(kind="phone", value="+8613800138000")]))

    assert second.customer_id == first.customer_id
    customer = await store.get_customer(first.customer_id)
    assert customer is not None
    assert {(i.kind, i.value) for i in customer.identities} == {
        ("email", "a@example.com"), ("phone", "+8613800138000")}


async def test_oldest_customer_wins_and_no_identity_is_taken(store: TicketStore) -> None:
    older = await store.persist(message(email="a@example.com"))
    newer = await store.persist(message(email=None, identities=[
        Identity(kind="phone", value="+8613800138000")]))
    assert older.customer_id != newer.customer_id

    both = await store.persist(message(email=None, identities=[
        Identity(kind="phone", value="+8613800138000"),
        Identity(kind="email", value="a@example.com")]))

    assert both.customer_id == older.customer_id
    owners = await store.find_customers("phone", "+8613800138000")
    assert [c.id for c in owners] == [newer.customer_id]


async def test_a_verified_message_upgrades_the_identity(store: TicketStore) -> None:
    first = await store.persist(message(email="a@example.com"))
    await store.persist(message(identities=[
        Identity(kind="email", value="a@example.com", verified=True)]))
    await store.persist(message(email="a@example.com"))  # unverified again: stays verified

    customer = await store.get_customer(first.customer_id)
    assert customer is not None
    assert [(i.value, i.verified) for i in customer.identities] == [("a@example.com", True)]


async def test_messages_without_identities_make_new_customers(store: TicketStore) -> None:
    first = await store.persist(message(email=None))
    second = await store.persist(message(email=None))
    assert first.customer_id != second.customer_id
    assert await count(store, "customer_identities") == 0


async def test_duplicate_idempotency_key_is_a_noop(store: TicketStore) -> None:
    m = message("dup-1")
    first = await store.persist(m)
    again = await store.persist(m.model_copy(update={"text": "changed"}))

    assert again.duplicate and not again.created_ticket
    assert (again.ticket_id, again.ticket_number, again.message_id, again.customer_id) == (
        first.ticket_id, first.ticket_number, first.message_id, first.customer_id)
    assert await count(store, "messages") == 1
    assert await count(store, "tickets") == 1
    ticket = await store.get_ticket(first.ticket_id or "")
    assert ticket is not None and [x.text for x in ticket.messages] == [m.text]


async def test_concurrent_duplicates_store_exactly_one_row(store: TicketStore) -> None:
    m = message("race-1", email="race@example.com")

    results = await asyncio.gather(*(store.persist(m) for _ in range(8)))

    assert sum(not r.duplicate for r in results) == 1
    assert len({(r.ticket_id, r.message_id, r.customer_id) for r in results}) == 1
    assert await count(store, "messages") == 1
    assert await count(store, "tickets") == 1
    assert await count(store, "customers") == 1


async def test_concurrent_new_senders_with_one_email_become_one_customer(
        store: TicketStore) -> None:
    results = await asyncio.gather(*(store.persist(message(email="new@example.com"))
                                     for _ in range(6)))
    assert len({r.customer_id for r in results}) == 1
    assert await count(store, "customers") == 1
    assert await count(store, "tickets") == 6


async def test_ticket_numbers_are_sequential_under_concurrency(store: TicketStore) -> None:
    results = await asyncio.gather(*(store.persist(message(email=f"c{i}@example.com"))
                                     for i in range(25)))
    numbers = sorted(r.ticket_number or 0 for r in results)
    assert numbers == list(range(1001, 1026))


async def test_persist_many_handles_duplicates_in_the_batch_and_stored(
        store: TicketStore) -> None:
    stored = await store.persist(message("k0"))
    batch = [message("k1", email="b@example.com"), message("k0"), message("k2"),
             message("k1", email="b@example.com")]

    results = await store.persist_many(batch)

    assert [r.duplicate for r in results] == [False, True, False, True]
    assert results[1].message_id == stored.message_id
    assert results[3].message_id == results[0].message_id
    assert results[3].ticket_number == results[0].ticket_number
    assert [r.ticket_number for r in results] == [1002, 1001, 1003, 1002]
    assert await count(store, "messages") == 3


async def test_persist_many_threads_within_the_batch(store: TicketStore) -> None:
    first = message(email="t@example.com", channel="email", account="help@shop.cn",
                    kind="message", thread=Thread(message_id="<m1@shop.cn>"))
    reply = message(email="t@example.com", channel="email", account="help@shop.cn",
                    kind="message", thread=Thread(message_id="<m2@shop.cn>",
                                                  in_reply_to="<m1@shop.cn>"))
    results = await store.persist_many([first, reply])
    assert results[0].created_ticket and not results[1].created_ticket
    assert results[1].ticket_id == results[0].ticket_id
    assert await count(store, "customers") == 1


async def test_a_reused_message_id_gets_a_fresh_row_id(store: TicketStore) -> None:
    m = message("one")
    await store.persist(m)
    other = await store.persist(message("two", id=m.id))
    assert not other.duplicate and other.message_id != str(m.id)
    assert await count(store, "messages") == 2


async def test_attachments_and_call_are_stored(store: TicketStore) -> None:
    attachment = Attachment(filename="photo.jpg", content_type="image/jpeg", size=3,
                            sha256="a" * 64, blob="sha256:" + "a" * 64, inline=True,
                            content_id="<img1>")
    call = Call(call_id="c-1", line="hotline", **{"from": "+8613800138000"}, to="+862100000000")
    result = await store.persist(message(kind="call", channel="telephony", account="hotline",
                                         attachments=[attachment], call=call))
    ticket = await store.get_ticket(result.ticket_id or "")
    assert ticket is not None
    [stored] = ticket.messages
    assert [(a.filename, a.content_type, a.size, a.sha256, a.inline)
            for a in stored.attachments] == [("photo.jpg", "image/jpeg", 3, "a" * 64, True)]
    assert stored.call is not None
    assert stored.call["call_id"] == "c-1" and stored.call["from"] == "+8613800138000"


async def test_timestamps_come_back_as_aware_utc(store: TicketStore) -> None:
    shanghai = timezone(timedelta(hours=8))
    occurred = datetime(2025, 3, 1, 9, 30, 15, 123456, tzinfo=shanghai)
    result = await store.persist(message(occurred_at=occurred))
    ticket = await store.get_ticket(result.ticket_id or "")
    assert ticket is not None
    stored = ticket.messages[0]
    assert stored.occurred_at == occurred
    assert stored.occurred_at is not None and stored.occurred_at.utcoffset() == timedelta(0)
    assert stored.persisted_at.tzinfo is not None


# ---- threading -------------------------------------------------------------------------------

async def test_thread_ticket_id_appends(store: TicketStore) -> None:
    first = await store.persist(message(email="a@example.com"))
    result = await store.persist(message(email="other@example.com", kind="call",
                                         channel="telephony", account="hotline",
                                         thread=Thread(ticket_id=first.ticket_id)))
    assert not result.created_ticket and result.ticket_id == first.ticket_id
    ticket = await store.get_ticket(first.ticket_id or "")
    assert ticket is not None and len(ticket.messages) == 2
    assert ticket.updated_at > ticket.created_at


async def test_thread_ticket_number_appends(store: TicketStore) -> None:
    first = await store.persist(message())
    result = await store.persist(message(channel="email", account="help@shop.cn",
                                         kind="message",
                                         thread=Thread(ticket_number=f"#{first.ticket_number}")))
    assert result.ticket_id == first.ticket_id and result.ticket_number == first.ticket_number


async def test_unknown_thread_hints_open_a_new_ticket(store: TicketStore) -> None:
    await store.persist(message())
    result = await store.persist(message(thread=Thread(
        ticket_number="9999", ticket_id="nope", in_reply_to="<unknown@x>",
        conversation_id="c-x", join_latest_open=False)))
    assert result.created_ticket and result.ticket_number == 1002


async def test_in_reply_to_and_references_follow_the_message_id(store: TicketStore) -> None:
    kw = {"channel": "email", "account": "help@shop.cn", "kind": "message"}
    first = await store.persist(message(thread=Thread(message_id="<a@shop.cn>"), **kw))
    reply = await store.persist(message(thread=Thread(message_id="<b@shop.cn>",
                                                      in_reply_to="<a@shop.cn>"), **kw))
    later = await store.persist(message(thread=Thread(
        message_id="<c@shop.cn>", references=["<a@shop.cn>", "<b@shop.cn>", "<gone@x>"]), **kw))
    assert reply.ticket_id == first.ticket_id
    assert later.ticket_id == first.ticket_id
    assert await count(store, "tickets") == 1


async def test_conversation_id_joins_the_latest_non_closed_ticket(store: TicketStore) -> None:
    kw = {"channel": "wechat", "account": "wx1", "kind": "message"}
    first = await store.persist(message(thread=Thread(conversation_id="conv-1"), **kw))
    same = await store.persist(message(thread=Thread(conversation_id="conv-1"), **kw))
    assert same.ticket_id == first.ticket_id

    await set_status(store, first.ticket_id or "", "closed")
    after_close = await store.persist(message(thread=Thread(conversation_id="conv-1"), **kw))
    assert after_close.created_ticket and after_close.ticket_id != first.ticket_id


async def test_join_latest_open_uses_the_customers_open_ticket_on_the_channel(
        store: TicketStore) -> None:
    sdk = {"channel": "sdk", "account": "app1", "kind": "message",
           "email": None, "identities": [Identity(kind="sdk_user", value="app1:u1")]}
    old = await store.persist(message(**sdk))
    newest = await store.persist(message(**sdk))
    joined = await store.persist(message(thread=Thread(join_latest_open=True), **sdk))
    assert joined.ticket_id == newest.ticket_id and joined.ticket_id != old.ticket_id

    other_channel = await store.persist(message(
        channel="webform", email=None, identities=[Identity(kind="sdk_user", value="app1:u1")],
        thread=Thread(join_latest_open=True)))
    assert other_channel.created_ticket

    await set_status(store, newest.ticket_id or "", "resolved")
    await set_status(store, old.ticket_id or "", "closed")
    after = await store.persist(message(thread=Thread(join_latest_open=True), **sdk))
    assert after.created_ticket


async def test_a_customer_reply_reopens_a_resolved_ticket(store: TicketStore) -> None:
    first = await store.persist(message())
    await set_status(store, first.ticket_id or "", "resolved")
    await store.persist(message(thread=Thread(ticket_id=first.ticket_id)))
    ticket = await store.get_ticket(first.ticket_id or "")
    assert ticket is not None and ticket.status == "open"


@pytest.mark.parametrize("flag", ["auto_reply", "bounce", "loop"])
async def test_a_machines_mail_joins_but_never_reopens(store: TicketStore, flag: str) -> None:
    kw: dict[str, Any] = {"channel": "email", "account": "support@shop.example",
                          "kind": "message"}
    first = await store.persist(message(thread=Thread(message_id="<a@x>"), **kw))
    await set_status(store, first.ticket_id or "", "resolved")
    joined = await store.persist(message(thread=Thread(in_reply_to="<a@x>"), flags=[flag], **kw))
    ticket = await store.get_ticket(first.ticket_id or "")
    assert joined.ticket_id == first.ticket_id
    assert ticket is not None and ticket.status == "resolved"
    assert ticket.messages[-1].flags == [flag]


async def test_a_message_id_leads_only_within_its_channel_and_account(
        store: TicketStore) -> None:
    support: dict[str, Any] = {"channel": "email", "account": "support@shop.example",
                               "kind": "message"}
    sales: dict[str, Any] = {"channel": "email", "account": "sales@shop.example",
                             "kind": "message"}
    first = await store.persist(message(thread=Thread(message_id="<same@x>"), **support))
    other = await store.persist(message(thread=Thread(in_reply_to="<same@x>"), **sales))
    same = await store.persist(message(thread=Thread(in_reply_to="<same@x>"), **support))
    assert other.created_ticket and other.ticket_id != first.ticket_id
    assert same.ticket_id == first.ticket_id


async def test_events_never_open_tickets(store: TicketStore) -> None:
    first = await store.persist(message(channel="wechat", account="wx1", kind="message",
                                        email=None, identities=[
                                            Identity(kind="wechat_openid", value="o1")]))
    event = message(channel="wechat", account="wx1", kind="event", text="", email=None,
                    identities=[Identity(kind="wechat_openid", value="o1")],
                    event=Event(type="subscribe"), thread=Thread(join_latest_open=True))

    result = await store.persist(event)

    assert result.ticket_id is None and result.ticket_number is None
    assert not result.created_ticket
    assert result.customer_id == first.customer_id
    assert await count(store, "tickets") == 1
    timeline = await store.customer_timeline(first.customer_id)
    assert [(m.kind, m.ticket_id) for m in timeline] == [
        ("message", first.ticket_id), ("event", None)]
    assert timeline[1].event == {"type": "subscribe", "key": None, "data": {}}
    again = await store.persist(event)
    assert again.duplicate and again.ticket_id is None


async def test_a_customer_shows_their_events_by_occurred_at_a_late_older_one_in_its_place(
        store: TicketStore) -> None:
    now = datetime.now(UTC)
    openid = [Identity(kind="wechat_openid", value="o-events")]

    def timeline_event(kind: str, key: str | None, minutes_ago: int) -> Any:
        return message(channel="wechat", account="wx1", kind="event", text="", email=None,
                       identities=openid, event=Event(type=kind, key=key, data={"k": kind}),
                       occurred_at=now - timedelta(minutes=minutes_ago))

    first = await store.persist(timeline_event("click", "MENU_1", 5))
    await store.persist(timeline_event("subscribe", None, 10))  # older, arriving late
    customer = await store.get_customer(first.customer_id)
    assert customer is not None
    assert [(e.type, e.key, e.channel, e.account, e.data) for e in customer.events] == [
        ("subscribe", None, "wechat", "wx1", {"k": "subscribe"}),
        ("click", "MENU_1", "wechat", "wx1", {"k": "click"})]
    assert await count(store, "tickets") == 0


async def test_messages_come_in_source_order(store: TicketStore) -> None:
    now = datetime.now(UTC)
    first = await store.persist(message(text="second", occurred_at=now - timedelta(minutes=5)))
    await store.persist(message(text="first", occurred_at=now - timedelta(minutes=10),
                                thread=Thread(ticket_id=first.ticket_id)))
    await store.persist(message(text="third", occurred_at=None,
                                received_at=now - timedelta(minutes=1),
                                thread=Thread(ticket_id=first.ticket_id)))
    ticket = await store.get_ticket(first.ticket_id or "")
    assert ticket is not None
    assert [m.text for m in ticket.messages] == ["first", "second", "third"]


# ---- queries ---------------------------------------------------------------------------------

async def test_list_filters(store: TicketStore) -> None:
    a = await store.persist(message("fa", routed=route("aftersales", priority="high"),
                                    email="a@example.com",
                                    channel_data={"reference": "REF-A"}))
    b = await store.persist(message("fb", routed=route("sales"), channel="email",
                                    account="help@shop.cn", kind="message",
                                    email="b@example.com"))
    c = await store.persist(message("fc", routed=route("sales"), email="a@example.com"))
    await set_status(store, c.ticket_id or "", "resolved")

    async def numbers(**filters: object) -> list[int]:
        page = await store.list_tickets(TicketFilter(**filters))  # type: ignore[arg-type]
        return [t.number for t in page.items]

    assert await numbers() == [c.ticket_number, b.ticket_number, a.ticket_number]
    assert await numbers(channel="email") == [b.ticket_number]
    assert await numbers(desk="sales") == [c.ticket_number, b.ticket_number]
    assert await numbers(status=("open",)) == [b.ticket_number, a.ticket_number]
    assert await numbers(status=("resolved",)) == [c.ticket_number]
    assert await numbers(status=("new", "resolved")) == [
        c.ticket_number, b.ticket_number, a.ticket_number]
    assert await numbers(customer_id=a.customer_id) == [c.ticket_number, a.ticket_number]
    assert await numbers(priority="high") == [a.ticket_number]
    assert await numbers(idempotency_key="email:help@shop.cn:fb") == [b.ticket_number]
    assert await numbers(reference="REF-A") == [a.ticket_number]
    assert await numbers(reference="REF-NONE") == []
    assert await numbers(desk="sales", customer_id=a.customer_id) == [c.ticket_number]


async def test_cursor_pagination_walks_every_ticket_once(store: TicketStore) -> None:
    await store.persist_many([message(email=f"p{i}@example.com") for i in range(7)])
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        page = await store.list_tickets(limit=3, cursor=cursor)
        seen += [t.number for t in page.items]
        pages += 1
        if page.next is None:
            break
        cursor = page.next
    assert pages == 3
    assert seen == list(range(1007, 1000, -1))


async def test_cursor_roundtrip_and_garbage(store: TicketStore) -> None:
    stamp = datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert decode_cursor(encode_cursor(stamp, "x")) == (stamp, "x")
    for bad in ("%%%", "bm90IGpzb24", encode_cursor(stamp, "x")[:-4]):
        with pytest.raises(CursorInvalid):
            await store.list_tickets(cursor=bad)


async def test_get_ticket_by_number_and_missing(store: TicketStore) -> None:
    result = await store.persist(message())
    by_number = await store.get_ticket(str(result.ticket_number))
    assert by_number is not None and by_number.id == result.ticket_id
    assert await store.get_ticket("00000000-0000-0000-0000-000000000000") is None
    assert await store.get_ticket("9" * 40) is None
    assert await store.get_customer("missing") is None
    assert await store.find_customers("email", "nobody@example.com") == []


async def test_find_customers_by_identity(store: TicketStore) -> None:
    result = await store.persist(message(email="Find.Me@Example.com"))
    found = await store.find_customers("email", "find.me@example.com")
    assert [c.id for c in found] == [result.customer_id]
    assert found[0].identities[0].value == "find.me@example.com"


async def test_ping(store: TicketStore) -> None:
    await store.ping()


# ---- failures --------------------------------------------------------------------------------

async def test_unreachable_postgres_is_storage_unavailable() -> None:
    engine = db.make_engine("postgresql+asyncpg://postgres@127.0.0.1:1/none",
                            pool_pre_ping=False)
    store = TicketStore(engine)
    try:
        with pytest.raises(StorageUnavailable) as caught:
            await store.persist(message())
        assert isinstance(caught.value, Transient)
        with pytest.raises(StorageUnavailable):
            await store.ping()
        with pytest.raises(StorageUnavailable):
            await store.list_tickets()
    finally:
        await engine.dispose()


async def test_unopenable_sqlite_is_storage_unavailable(tmp_path: object) -> None:
    engine = db.make_engine(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.sqlite3")
    store = TicketStore(engine)
    try:
        with pytest.raises(StorageUnavailable):
            await store.persist(message())
        with pytest.raises(StorageUnavailable):
            await store.ping()
    finally:
        await store.close()
        await engine.dispose()
        # aiosqlite stops a failed connection's worker thread without awaiting it; let it
        # finish while this test's loop still runs, or it reports "Event loop is closed".
        await asyncio.sleep(0.2)


async def test_counter_row_is_recreated_if_missing(store: TicketStore) -> None:
    async with store.engine.begin() as connection:
        await connection.execute(db.Counter.__table__.delete())
    result = await store.persist(message())
    assert result.ticket_number == 1001
    async with store.engine.connect() as connection:
        value = (await connection.execute(select(func.max(db.Counter.value)))).scalar_one()
    assert value == 1001


@contextlib.contextmanager
def recorded_statements(store: TicketStore,
                        monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The statements (an executemany counts once) that writes run, BEGIN and COMMIT left out.

    SQLAlchemy's cursor events on PostgreSQL; on a SQLite file, the two methods through which
    the raw sqlite3 fast path runs every statement.
    """
    statements: list[str] = []

    def keep(statement: str) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "PRAGMA", "SELECT 1")):
            statements.append(statement)

    if store.engine.dialect.name == "sqlite":
        for name in ("_run", "_run_many"):
            run = getattr(SqliteWriteStatements, name)

            def recording(self: SqliteWriteStatements, sql: str, *args: Any,
                          _run: Any = run) -> Any:
                keep(sql)
                return _run(self, sql, *args)

            monkeypatch.setattr(SqliteWriteStatements, name, recording)
        yield statements
        return

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        keep(statement)

    event.listen(store.write_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(store.write_engine, "before_cursor_execute", record)


async def test_persisting_takes_a_constant_handful_of_statements(
        store: TicketStore, monkeypatch: pytest.MonkeyPatch) -> None:
    with recorded_statements(store, monkeypatch) as statements:
        await store.persist(message(email="first@example.com"))
        single = len(statements)
        statements.clear()
        await store.persist_many([message(email=f"m{i}@example.com",
                                          thread=Thread(in_reply_to=f"<{i}@x>"))
                                  for i in range(50)])
        batch = len(statements)
    # Dedup check, identities, customer, identity, counter, ticket, message, the search
    # document (on PostgreSQL the tickets' lock, then its sources and its upsert), then the
    # event log's counter and its rows, and the history's rows (one multi-row insert).
    assert 11 <= single <= 13
    # Fifty messages: the same statements plus one thread lookup, not fifty times as many.
    assert single < batch <= single + 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_batches_run_whole_on_one_writer_thread(store: TicketStore) -> None:
    seen: list[tuple[str, str]] = []

    def trace(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # What SQLite itself runs, and on which thread (an executemany traces once per row).
        dbapi_connection.set_trace_callback(lambda statement: seen.append(
            (threading.current_thread().name, statement.strip().upper())))

    event.listen(store.write_engine, "connect", trace)
    try:
        await store.persist_many([message(email=f"w{i}@example.com") for i in range(3)])
        await store.close()  # the thread ends; the next write starts another
        await store.persist(message(email="after@example.com"))
    finally:
        event.remove(store.write_engine, "connect", trace)
    threads = {name for name, _ in seen}
    assert threads and all(name.startswith("ticket-store-writer") for name in threads)
    assert threading.current_thread().name not in threads
    # Each transaction takes the write lock first: BEGIN IMMEDIATE, never a deferred BEGIN.
    begins = [statement for _, statement in seen if statement.startswith("BEGIN")]
    assert begins == ["BEGIN IMMEDIATE", "BEGIN IMMEDIATE"]
    assert seen[0][1] == "BEGIN IMMEDIATE"
    assert [statement for _, statement in seen if statement == "COMMIT"] == ["COMMIT"] * 2
    assert await count(store, "messages") == 4


def test_only_a_sqlite_file_gets_a_writer_thread() -> None:
    assert db.sqlite_file("sqlite+aiosqlite:////var/lib/intake/intake.sqlite3")
    assert not db.sqlite_file("sqlite+aiosqlite://")
    assert not db.sqlite_file("sqlite+aiosqlite:///:memory:")
    assert not db.sqlite_file("sqlite+aiosqlite:///file:x?mode=memory&uri=true")
    assert not db.sqlite_file("postgresql+asyncpg://postgres@127.0.0.1/test")


async def test_a_non_ascii_digit_is_not_taken_for_a_ticket_number(store: TicketStore) -> None:
    assert await store.get_ticket("¹") is None
    assert await store.get_ticket("١٠٠١") is None  # Arabic-Indic digits
