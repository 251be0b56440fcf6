"""The SQLite fast path stores what SQLAlchemy stores, and fails the way SQLAlchemy fails."""

from __future__ import annotations

import contextlib
import sqlite3
import types
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Boolean, event, text
from sqlalchemy import exc as sa_exc

from intake import Rejected
from intake.errors import StorageUnavailable
from intake.message import Attachment, Call, Event, Form, Identity, Message, RouteDelivery, Thread
from ticket_core import db
from ticket_core import planner as planner_module
from ticket_core import store as store_module
from ticket_core.consume import persist_routed
from ticket_core.failures import Unpersistable
from ticket_core.store import PersistResult, TicketStore
from ticket_core.timers import Timelines
from ticket_core.writes import (
    MESSAGES,
    SqliteWriteStatements,
    _from_sqlite_datetime,
    _sqlite_boolean,
    _sqlite_conversion,
    _sqlite_datetime,
)

from .builders import message, route, timed_route
from .test_timers import RULES, STEPS

TABLES = ("customers", "customer_identities", "tickets", "messages", "attachments", "counters",
          "timers", "events", "ticket_tags", "search_documents", "history")
SHANGHAI = timezone(timedelta(hours=8))
FAST_AND_CORE = pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "core"])


@contextlib.asynccontextmanager
async def sqlite_store(path: Path, *, fast_path: bool) -> AsyncIterator[TicketStore]:
    url = f"sqlite+aiosqlite:///{path}"
    await db.migrate(url)
    engine = db.make_engine(url)
    store = TicketStore(engine, sqlite_fast_path=fast_path,
                        timelines=Timelines.from_document(RULES))
    try:
        yield store
    finally:
        await store.close()
        await engine.dispose()


class Deterministic:
    """Stands in for the store's uuid4 and clock, so that two runs write the same ids and times."""

    def __init__(self) -> None:
        self.ids = 0
        self.now = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)

    def uuid4(self) -> uuid.UUID:
        self.ids += 1
        return uuid.UUID(int=self.ids)

    def utcnow(self) -> datetime:
        self.now += timedelta(milliseconds=7, microseconds=1)
        return self.now

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(planner_module, "uuid", types.SimpleNamespace(uuid4=self.uuid4))
        monkeypatch.setattr(planner_module, "utcnow", self.utcnow)
        monkeypatch.setattr(store_module, "utcnow", self.utcnow)


Step = tuple[str, Any]  # ("persist", batch) or ("sql", statement run between batches)


@dataclass
class Recorder:
    """Runs the scenario on one store and keeps its steps, to replay them on another."""

    store: TicketStore
    steps: list[Step] = field(default_factory=list)
    results: list[list[PersistResult]] = field(default_factory=list)

    async def persist(self, batch: list[Message]) -> list[PersistResult]:
        self.steps.append(("persist", batch))
        return await run_step(self.store, ("persist", batch), self.results)

    async def sql(self, statement: str) -> None:
        self.steps.append(("sql", statement))
        await run_step(self.store, ("sql", statement), self.results)


async def run_step(store: TicketStore, step: Step,
                   results: list[list[PersistResult]]) -> list[PersistResult]:
    kind, what = step
    if kind == "sql":
        async with store.engine.begin() as connection:
            await connection.execute(text(what))
        return []
    results.append(await store.persist_many(what))
    return results[-1]


async def replay(store: TicketStore, steps: list[Step]) -> list[list[PersistResult]]:
    results: list[list[PersistResult]] = []
    for step in steps:
        await run_step(store, step, results)
    return results


async def scenario(s: Recorder) -> None:
    """New customers, known identities, verified upgrades, every thread hint, events,
    attachments, duplicates within and across batches, reopening, a missing counter row."""
    a = message("a", email="Li.Wei@Example.CN", routed=route(tags=["vip", "中文"],
                                                             category="complaint"),
                occurred_at=datetime(2025, 3, 1, 9, 30, 15, tzinfo=SHANGHAI),
                form=Form(form_id="contact", fields={"topic": "退货", "n": 3, "ok": True}),
                channel_data={"reference": "WF-7Q2K", "client_ip": "127.0.0.1"},
                attachments=[
                    Attachment(filename="photo.jpg", content_type="image/jpeg", size=3,
                               sha256="a" * 64, blob="sha256:" + "a" * 64, inline=True,
                               content_id="<img1>"),
                    Attachment(filename="x.pdf", original_filename="报告.pdf", size=9,
                               sha256="b" * 64, blob="sha256:" + "b" * 64)])
    mail = message("mail-1", channel="email", account="help@shop.cn", kind="message",
                   identities=[Identity(kind="email", value="b@shop.cn", verified=True),
                               Identity(kind="phone", value="+8613800138000")],
                   subject=None, text="\n  first line\nsecond", html="<p>first</p>",
                   thread=Thread(message_id="<m1@shop.cn>", subject="Order 42"),
                   routed=route(deliveries=[RouteDelivery(desk="sales", role="copy"),
                                            RouteDelivery(desk="aftersales")]),
                   flags=["auto_reply"])
    call = message("call-1", channel="telephony", account="hotline", kind="call", email=None,
                   call=Call(call_id="c-1", line="hotline", started_at=datetime(
                       2025, 3, 1, 1, 0, 0, 5, tzinfo=UTC), **{"from": "+862100000000"}),
                   occurred_at=datetime(2025, 2, 28, 23, 59, 59, 999999, tzinfo=UTC))
    chat = message("chat-1", channel="wechat", account="wx1", kind="message", email=None,
                   identities=[Identity(kind="wechat_openid", value="o-123")],
                   thread=Thread(conversation_id="conv-1"), routed=route("general"))
    await s.sql("DELETE FROM counters")  # the first batch creates the row
    first = await s.persist([
        a, mail, call,
        a.model_copy(update={"text": "the same key again"}),  # duplicate within the batch
        message("event-1", kind="event", email="li.wei@example.cn",
                event=Event(type="subscribe", data={"scene": "qr"})),
        chat,
        message("anon-1", email=None, routed=route()),  # no identity: a customer of its own
    ])
    assert [r.duplicate for r in first] == [False, False, False, True, False, False, False]
    assert first[4].ticket_id is None and first[4].customer_id == first[0].customer_id

    await s.sql("UPDATE tickets SET status = 'resolved' WHERE number = 1001")
    second = await s.persist([
        # Message-ID, newest reference first; the verified email is known already.
        message("mail-2", channel="email", account="help@shop.cn", kind="message",
                email="b@shop.cn", thread=Thread(message_id="<m2@shop.cn>",
                                                 references=["<nope@x>", "<m1@shop.cn>"])),
        # Ticket number, a verified upgrade and a new phone for the found customer: reopens.
        message("by-number", identities=[
            Identity(kind="email", value="li.wei@example.cn", verified=True),
            Identity(kind="phone", value="+8613900000000")],
            thread=Thread(ticket_number="Re: [#1001] Where is my order?")),
        call.model_copy(update={"text": "redelivered"}),  # duplicate across batches
        message("reused-id", id=a.id, email="c@example.com"),  # a producer reused an id
        message("chat-2", channel="wechat", account="wx1", kind="message", email=None,
                identities=[Identity(kind="wechat_openid", value="o-123")],
                thread=Thread(conversation_id="conv-1")),
        message("join", channel="email", account="help@shop.cn", kind="message",
                email="b@shop.cn", thread=Thread(join_latest_open=True)),
        # The phone another customer owns: it stays theirs, the sender is the email's.
        message("two-owners", identities=[Identity(kind="email", value="c@example.com"),
                                          Identity(kind="phone", value="+8613800138000")]),
    ])
    assert second[0].ticket_id == first[1].ticket_id
    assert second[1].ticket_number == 1001 and not second[1].created_ticket
    assert second[2].duplicate and second[3].message_id != str(a.id)
    assert second[4].ticket_id == first[5].ticket_id
    assert second[5].ticket_id == first[1].ticket_id

    await s.persist([message("by-id", email="nobody@example.com",
                             thread=Thread(ticket_id=first[2].ticket_id))])
    await s.sql("UPDATE tickets SET status = 'closed' WHERE conversation_id = 'conv-1'")
    await s.sql("UPDATE tickets SET status = 'pending' WHERE number = 1002")
    third = await s.persist([
        message("chat-3", channel="wechat", account="wx1", kind="message", email=None,
                identities=[Identity(kind="wechat_openid", value="o-123")],
                thread=Thread(conversation_id="conv-1")),  # closed: a new ticket
        message("mail-3", channel="email", account="help@shop.cn", kind="message",
                email="b@shop.cn", thread=Thread(in_reply_to="<m2@shop.cn>")),  # reopens
        message("new-1", email="n1@example.com"),
        message("new-2", email="N1@example.com", subject=None, text="same new sender"),
        message("mail-4", channel="email", account="help@shop.cn", kind="message",
                email="b@shop.cn"),  # no hint: a newer ticket of the same customer
        message("copy", channel="email", account="help@shop.cn", kind="message",
                email="d@shop.cn", thread=Thread(message_id="<m1@shop.cn>")),  # stored twice
    ])
    assert third[0].created_ticket and third[0].ticket_id != first[5].ticket_id
    assert third[1].ticket_id == first[1].ticket_id
    assert third[2].customer_id == third[3].customer_id
    assert third[4].created_ticket and third[5].created_ticket

    # Each rule picks one ticket among several: the latest not closed of a conversation,
    # the latest open of the customer, the latest stored copy of a Message-ID.
    await s.sql(f"UPDATE tickets SET status = 'open' WHERE number = {first[5].ticket_number}")
    await s.sql(f"UPDATE tickets SET status = 'closed' WHERE number = {third[0].ticket_number}")
    await s.sql(f"UPDATE tickets SET status = 'resolved' WHERE number = {third[4].ticket_number}")
    fourth = await s.persist([
        message("chat-4", channel="wechat", account="wx1", kind="message", email=None,
                identities=[Identity(kind="wechat_openid", value="o-123")],
                thread=Thread(conversation_id="conv-1")),
        message("join-2", channel="email", account="help@shop.cn", kind="message",
                email="b@shop.cn", thread=Thread(join_latest_open=True)),
        message("reply-latest", channel="email", account="help@shop.cn", kind="message",
                email="e@shop.cn", thread=Thread(in_reply_to="<m1@shop.cn>")),
    ])
    assert [r.ticket_id for r in fourth] == [
        first[5].ticket_id, first[1].ticket_id, third[5].ticket_id]
    await s.sql(f"UPDATE tickets SET status = 'pending' WHERE number = {third[0].ticket_number}")
    await s.sql(f"UPDATE tickets SET status = 'open' WHERE number = {third[4].ticket_number}")
    fifth = await s.persist([
        message("chat-5", channel="wechat", account="wx1", kind="message", email=None,
                identities=[Identity(kind="wechat_openid", value="o-123")],
                thread=Thread(conversation_id="conv-1")),
        message("join-3", channel="email", account="help@shop.cn", kind="message",
                email="b@shop.cn", thread=Thread(join_latest_open=True)),
    ])
    assert [r.ticket_id for r in fifth] == [third[0].ticket_id, third[4].ticket_id]

    # Ratings land on the conversation's latest ticket, closed too; the latest answer wins, an
    # older one delivered late changes nothing; a ticket of the same batch can be rated.
    def rating(key: str, score: int, minute: int, conversation: str = "conv-1") -> Message:
        return message(key, channel="wechat", account="wx1", kind="event", email=None,
                       identities=[Identity(kind="wechat_openid", value="o-123")],
                       thread=Thread(conversation_id=conversation), text="好",
                       occurred_at=datetime(2025, 3, 2, 10, minute, tzinfo=SHANGHAI),
                       event=Event(type="satisfaction", data={"score": score, "comment": "好"}))
    await s.sql(f"UPDATE tickets SET status = 'closed' WHERE number = {third[0].ticket_number}")
    rated = await s.persist([
        rating("rate-1", 3, 10), rating("rate-2", 5, 11), rating("rate-late", 1, 9),
        message("chat-new", channel="wechat", account="wx1", kind="message", email=None,
                identities=[Identity(kind="wechat_openid", value="o-9")],
                thread=Thread(conversation_id="conv-2")),
        rating("rate-new", 4, 10, conversation="conv-2"),
        rating("rate-nowhere", 4, 10, conversation="conv-none"),
    ])
    assert all(r.ticket_id is None for r in rated if r.ticket_id != rated[3].ticket_id)
    await s.persist([rating("rate-3", 2, 12)])
    await s.persist([message("last", email=None, routed=route(priority="high"))])
    # SLA, escalation (a timeline of the rules, and one only the decision knows) and
    # overflow: the tickets' sla and escalation, their timers and events.
    t0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    await s.persist([
        message("timed-1", received_at=t0, routed=timed_route(
            t0, overflow_after=timedelta(minutes=10), steps=STEPS,
            hard_deadline=timedelta(hours=48))),
        message("timed-2", received_at=t0, routed=timed_route(
            t0, steps=STEPS[1:], timeline="not_in_the_rules", deadline=None)),
        message("timed-3", email="li.wei@example.cn", routed=timed_route(t0))])
    # One ticket per delivery: a multi decision (owner, copy, collaborator) and a
    # primary_secondary one (its collaborator linked, its overflow a timer); a follow-up
    # joins the customer-facing ticket and makes no more.
    fanned = await s.persist([
        message("multi-1", channel="wechat", account="wx1", kind="message", email=None,
                identities=[Identity(kind="wechat_openid", value="o-77")],
                thread=Thread(conversation_id="conv-77"), routed=route(mode="multi", deliveries=[
                    RouteDelivery(desk="brand_a"),
                    RouteDelivery(desk="logistics", skill_group="parcels", role="copy"),
                    RouteDelivery(desk="aftersales", role="collaborator")])),
        message("primary-1", email="p@example.com", routed=route(
            mode="primary_secondary", deliveries=[
                RouteDelivery(desk="sales", role="primary"),
                RouteDelivery(desk="aftersales", role="collaborator"),
                RouteDelivery(desk="regional", role="overflow", after="10m",
                              due=t0 + timedelta(minutes=10))]))])
    follow_up = await s.persist([
        message("multi-2", channel="wechat", account="wx1", kind="message", email=None,
                identities=[Identity(kind="wechat_openid", value="o-77")],
                thread=Thread(conversation_id="conv-77"), routed=route(mode="multi", deliveries=[
                    RouteDelivery(desk="brand_a"),
                    RouteDelivery(desk="logistics", role="copy")])),
        message("join-77", channel="wechat", account="wx1", kind="message", email=None,
                identities=[Identity(kind="wechat_openid", value="o-77")],
                thread=Thread(join_latest_open=True))])
    assert [r.ticket_id for r in follow_up] == [fanned[0].ticket_id] * 2

    # Issue 17: a closed ticket's message makes one follow-up inheriting desk, group, category
    # and tags; a merged ticket's message lands on its target; on_hold and resolved tickets
    # open again (resolved: a reopen counted), their automatic transitions cancelled.
    await s.sql("UPDATE tickets SET status = 'closed', category = 'inquiry', "
                "skill_group = 'vip_care' WHERE number = 1001")
    await s.sql("UPDATE tickets SET status = 'merged', merged_into = "
                "(SELECT id FROM tickets WHERE number = 1003) WHERE number = 1002")
    await s.sql("UPDATE tickets SET status = 'on_hold' WHERE number = 1003")
    await s.sql("UPDATE tickets SET status = 'resolved' WHERE number = 1004")
    await s.sql("INSERT INTO timers (kind, ticket_id, ref, due_at, state, created_at) "
                "SELECT 'auto_resolve', id, 'resolved', created_at, 'pending', created_at "
                "FROM tickets WHERE number IN (1003, 1004)")
    lifecycle = await s.persist([
        message("closed-1", thread=Thread(ticket_number="#1001"), routed=route("presales")),
        message("closed-2", email="x@example.com", thread=Thread(ticket_number="#1001")),
        message("merged-1", thread=Thread(ticket_number="#1002")),
        message("resolved-1", thread=Thread(ticket_number="#1004")),
    ])
    assert lifecycle[0].created_ticket and lifecycle[1].ticket_id == lifecycle[0].ticket_id
    assert not lifecycle[2].created_ticket and lifecycle[2].ticket_number == 1003
    await s.sql("UPDATE tickets SET status = 'closed' WHERE number = 1004")
    later = await s.persist([message("closed-3", thread=Thread(ticket_number="#1001")),
                             message("closed-4", thread=Thread(ticket_number="#1004"))])
    assert later[0].ticket_id == lifecycle[0].ticket_id and later[1].created_ticket


def dump(path: Path) -> dict[str, list[tuple[tuple[str, Any], ...]]]:
    """Every row of every table as SQLite holds it: each value with its Python type."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return {table: [tuple((type(value).__name__, value) for value in row)
                        for row in connection.execute(f"SELECT * FROM {table} ORDER BY rowid")]
                for table in TABLES}


async def views(store: TicketStore) -> list[Any]:
    """What the agent API reads: every ticket with its messages, every customer, timelines."""
    page = await store.list_tickets(limit=200)
    tickets = [await store.get_ticket(t.id) for t in page.items]
    customer_ids = sorted({t.customer_id for t in page.items})
    return [tickets, [await store.get_customer(c) for c in customer_ids],
            [await store.customer_timeline(c) for c in customer_ids]]


async def record_scenario(tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> tuple[Recorder, list[Any]]:
    """The scenario on the fast path: its steps, results, rows and views."""
    Deterministic().install(monkeypatch)
    async with sqlite_store(tmp_path / "fast.sqlite3", fast_path=True) as fast:
        recorder = Recorder(fast)
        await scenario(recorder)
        return recorder, await views(fast)


async def test_fast_path_stores_exactly_what_sqlalchemy_stores(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorded, fast_views = await record_scenario(tmp_path, monkeypatch)

    Deterministic().install(monkeypatch)
    async with sqlite_store(tmp_path / "core.sqlite3", fast_path=False) as core:
        core_results = await replay(core, recorded.steps)
        core_views = await views(core)

    assert recorded.results == core_results
    fast_rows, core_rows = dump(tmp_path / "fast.sqlite3"), dump(tmp_path / "core.sqlite3")
    for table in TABLES:
        assert fast_rows[table], table
        assert fast_rows[table] == core_rows[table], table
    assert fast_views == core_views


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_fast_path_reads_back_what_postgresql_reads_back(
        store: TicketStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorded, fast_views = await record_scenario(tmp_path, monkeypatch)

    Deterministic().install(monkeypatch)
    store.timelines = Timelines.from_document(RULES)
    assert recorded.results == await replay(store, recorded.steps)
    assert fast_views == await views(store)


# ---- the value conversions -------------------------------------------------------------------

# The write engine's own dialect: its JSON serializer is the one SQLAlchemy stores with.
DIALECT = db.make_sqlite_write_engine("sqlite:///never-opened.sqlite3").dialect


def sqlalchemy_bind(column: str, value: Any) -> Any:
    column_type = MESSAGES.c[column].type
    process = column_type.dialect_impl(DIALECT).bind_processor(DIALECT)
    return process(value) if process else value


@pytest.mark.parametrize("value", [
    datetime(2025, 3, 1, 9, 30, 15, tzinfo=SHANGHAI),  # no microseconds
    datetime(2025, 3, 1, 9, 30, 15, 120, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),  # a year of three digits
    None,
])
def test_datetimes_are_the_text_sqlalchemy_stores_and_reads(value: datetime | None) -> None:
    stored = _sqlite_datetime(value)
    assert stored == sqlalchemy_bind("received_at", value)
    if value is not None:
        assert stored is not None
        read = MESSAGES.c.received_at.type.dialect_impl(DIALECT).result_processor(DIALECT, None)
        assert _from_sqlite_datetime(stored) == read(stored) == value
        assert _from_sqlite_datetime(stored).tzinfo is UTC


def test_a_naive_datetime_is_refused_as_sqlalchemy_refuses_it() -> None:
    with pytest.raises(ValueError, match="naive"):
        sqlalchemy_bind("received_at", datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        _sqlite_datetime(datetime(2025, 1, 1))


@pytest.mark.parametrize("value", [
    None, [], ["auto_reply"], {"reference": "WF-1", "n": 1.5, "ok": True, "none": None},
    {"fields": {"name": "李伟", "emoji": "🙂", "quote": "\"'\\"}},
])
def test_json_is_the_text_sqlalchemy_stores(value: Any) -> None:
    conversion = _sqlite_conversion(MESSAGES, "form")
    assert conversion is not None and conversion(value) == sqlalchemy_bind("form", value)


def test_booleans_are_stored_as_sqlalchemy_stores_them() -> None:
    process = Boolean().dialect_impl(DIALECT).bind_processor(DIALECT)
    assert process is not None
    for value in (True, False, None):
        assert _sqlite_boolean(value) == process(value)


async def test_added_identities_leave_one_stored_meanwhile_alone(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    async with sqlite_store(path, fast_path=True) as store:
        owner = await store.persist(message(email="a@example.com"))
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        SqliteWriteStatements(connection).add_identities([
            {"customer_id": "someone-else", "kind": "email", "value": "a@example.com",
             "verified": True, "created_at": datetime.now(UTC)}])
        stored = connection.execute("SELECT customer_id, verified FROM customer_identities")
        assert stored.fetchall() == [(owner.customer_id, 0)]
    finally:
        connection.close()


# ---- failures --------------------------------------------------------------------------------

def on_writer_connection(store: TicketStore, setup: Callable[[sqlite3.Connection], None]) -> None:
    """`setup` on the writer's sqlite3 connection, when the store's first write opens it."""
    event.listen(store.write_engine, "connect", lambda dbapi_connection, _record: setup(
        dbapi_connection))


async def run_sql(store: TicketStore, statement: str) -> None:
    async with store.engine.begin() as connection:
        await connection.exec_driver_sql(statement)


async def count_rows(store: TicketStore, table: str) -> int:
    async with store.engine.connect() as connection:
        return int((await connection.exec_driver_sql(f"SELECT count(*) FROM {table}"))
                   .scalar_one())


@FAST_AND_CORE
async def test_a_unique_conflict_is_retried_and_then_succeeds(
        tmp_path: Path, fast_path: bool) -> None:
    async with sqlite_store(tmp_path / "db.sqlite3", fast_path=fast_path) as store:
        conflicts: list[int] = []

        def conflicting_once() -> bool:  # as if another writer had committed the key first
            conflicts.append(1)
            return len(conflicts) == 1

        on_writer_connection(store, lambda connection: connection.create_function(
            "conflicting_once", 0, conflicting_once))
        await run_sql(store, "CREATE TRIGGER conflict BEFORE INSERT ON messages "
                             "WHEN conflicting_once() BEGIN SELECT RAISE(ABORT, "
                             "'UNIQUE constraint failed: messages.idempotency_key'); END")

        result = await store.persist(message("k1"))

        assert len(conflicts) == 2
        # The first attempt rolled back whole: its ticket number was not used up.
        assert (result.ticket_number, result.duplicate) == (1001, False)
        assert await count_rows(store, "messages") == 1


@FAST_AND_CORE
async def test_a_conflict_that_stays_fails_the_message_instead_of_holding(
        tmp_path: Path, fast_path: bool) -> None:
    async with sqlite_store(tmp_path / "db.sqlite3", fast_path=fast_path) as store:
        first = await store.persist(message("k1"))
        # The counter set back under a stored ticket: every attempt collides on number 1001.
        await run_sql(store, "UPDATE counters SET value = 1000")

        with pytest.raises(Unpersistable, match="the same conflict 5 times") as caught:
            await store.persist(message("k2"))

        assert not getattr(caught.value, "hold", False)

        assert isinstance(caught.value.__cause__, sa_exc.IntegrityError)
        assert isinstance(caught.value.__cause__.orig, sqlite3.IntegrityError)
        assert await count_rows(store, "tickets") == 1
        await run_sql(store, "UPDATE counters SET value = 1001")
        second = await store.persist(message("k2"))
        assert (first.ticket_number, second.ticket_number) == (1001, 1002)


@FAST_AND_CORE
async def test_a_locked_database_is_storage_unavailable_then_writable_again(
        tmp_path: Path, fast_path: bool) -> None:
    path = tmp_path / "db.sqlite3"
    async with sqlite_store(path, fast_path=fast_path) as store:
        on_writer_connection(store, lambda connection: connection.execute(
            "PRAGMA busy_timeout=50"))
        await store.persist(message("k1"))
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StorageUnavailable, match="locked") as caught:
                await store.persist(message("k2"))
            assert isinstance(caught.value.__cause__, sa_exc.OperationalError)
        finally:
            other.close()
        assert not (await store.persist(message("k2"))).duplicate
        assert await count_rows(store, "messages") == 2


@FAST_AND_CORE
async def test_a_value_sqlite_refuses_is_dead_lettered_as_unpersistable(
        tmp_path: Path, fast_path: bool) -> None:
    async with sqlite_store(tmp_path / "db.sqlite3", fast_path=fast_path) as store:
        on_writer_connection(store, lambda connection: connection.setlimit(
            sqlite3.SQLITE_LIMIT_LENGTH, 20_000))
        persist: Callable[[list[Message]], Awaitable[None]] = persist_routed(store)

        with pytest.raises(Rejected) as caught:
            await persist([message("big", routed=route(), text="x" * 30_000)])

        assert caught.value.reason == "unpersistable"
        assert isinstance(caught.value.__cause__, sa_exc.DataError)
        await persist([message("small", routed=route())])
        assert await count_rows(store, "messages") == 1


@FAST_AND_CORE
async def test_a_naive_datetime_fails_the_batch_as_a_statement_error(
        tmp_path: Path, fast_path: bool) -> None:
    async with sqlite_store(tmp_path / "db.sqlite3", fast_path=fast_path) as store:
        naive = message("naive")
        naive.received_at = datetime(2025, 1, 1)  # no validation on assignment

        with pytest.raises(sa_exc.StatementError, match="naive datetime"):
            await store.persist(naive)

        assert await count_rows(store, "tickets") == 0
        assert not (await store.persist(message("fine"))).duplicate


def test_a_column_a_row_leaves_out_gets_its_default_on_the_fast_path() -> None:
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE customer_identities (id INTEGER PRIMARY KEY, "
                       "customer_id TEXT, kind TEXT, value TEXT, verified INTEGER, "
                       "created_at TEXT)")
    statements = SqliteWriteStatements(connection)
    # No `verified`: the model's default (False) goes in, as SQLAlchemy's insert would do.
    statements.insert(db.CustomerIdentity.__table__, [{
        "customer_id": "c1", "kind": "email", "value": "a@example.cn",
        "created_at": datetime(2025, 6, 1, tzinfo=UTC)}])
    connection.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, type TEXT, "
                       "occurred_at TEXT, desk TEXT, ticket_id TEXT, customer_id TEXT, "
                       "actor TEXT, data TEXT)")
    # No `desk`, `actor`…: NULL, where the raw path had raised KeyError.
    statements.insert(db.Event.__table__, [{
        "id": 1, "type": "ticket.created", "occurred_at": datetime(2025, 6, 1, tzinfo=UTC),
        "data": {}}])
    assert connection.execute("SELECT verified FROM customer_identities").fetchall() == [(0,)]
    assert connection.execute("SELECT desk, actor, data FROM events").fetchall() == [
        (None, None, "{}")]


async def test_the_core_statements_search_the_indexes_on_sqlite(tmp_path: Path) -> None:
    """The fast path's two index fixes, ported: identities by (kind, value) through the unique
    index for each kind, and no empty `IN ()` beside the list that is given."""
    from sqlalchemy.engine import Connection

    from ticket_core.writes import CoreWriteStatements

    plans: list[str] = []

    def explain(connection: Connection) -> None:
        def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                   executemany: bool) -> None:
            if statement.startswith("SELECT"):
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                            parameters).all()
                plans.append(" | ".join(str(row[-1]) for row in rows))

        event.listen(connection, "before_cursor_execute", record)
        try:
            statements = CoreWriteStatements(connection)
            list(statements.known_identities([("email", "a@x.cn"), ("email", "b@x.cn"),
                                              ("phone", "+86138")]))
            list(statements.tickets_named(["t1"], []))
            list(statements.tickets_named([], [1001]))
        finally:
            event.remove(connection, "before_cursor_execute", record)

    async with sqlite_store(tmp_path / "db.sqlite3", fast_path=False) as store:
        async with store.engine.connect() as connection:
            await connection.run_sync(explain)
    assert len(plans) == 3
    for plan in plans:
        assert "SCAN" not in plan.replace("SCAN CONSTANT", ""), plan
    assert "SEARCH customer_identities USING INDEX" in plans[0]
