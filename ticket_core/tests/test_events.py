"""The event log: rows written with each change, ids in order, the envelope, the type filter."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from sqlalchemy import select, update

from intake.message import Identity, Thread
from ticket_core.db import make_engine, migrate
from ticket_core.events import RecentEvents, TypeFilter, envelope, routing_key
from ticket_core.store import TicketStore
from ticket_core.writes import EVENTS, TICKETS

from .builders import message, route


async def all_events(store: TicketStore) -> list[dict]:
    return [envelope(row) for row in await store.events_after(0, 10_000)]


async def test_a_new_ticket_logs_ticket_created_then_message_created(
        store: TicketStore) -> None:
    result = await store.persist(message(routed=route("aftersales")))

    created, posted = await all_events(store)

    assert (created["id"], created["type"], posted["id"], posted["type"]) == (
        1, "ticket.created", 2, "message.created")
    assert set(created) == {"id", "type", "occurred_at", "desk", "ticket_id", "customer_id",
                            "actor", "data"}
    assert created["desk"] == "aftersales" and created["ticket_id"] == result.ticket_id
    assert created["customer_id"] == result.customer_id and created["actor"] == "customer"
    assert created["data"]["ticket_number"] == result.ticket_number
    assert posted["data"]["message_id"] == result.message_id


async def test_a_duplicate_logs_nothing_and_a_reopening_logs_ticket_updated(
        store: TicketStore) -> None:
    first = await store.persist(message("k1", routed=route()))
    await store.persist(message("k1", routed=route()))
    async with store.engine.begin() as conn:
        await conn.execute(update(TICKETS).values(status="resolved"))
    await store.persist(message("k2", routed=route(),
                                thread=Thread(ticket_id=first.ticket_id)))

    types = [e["type"] for e in await all_events(store)]

    assert types == ["ticket.created", "message.created", "ticket.updated", "message.created"]
    updated = (await all_events(store))[2]
    assert updated["data"]["status"] == "open"
    assert updated["data"]["previous_status"] == "resolved"


async def test_an_event_message_logs_message_created_without_a_ticket(
        store: TicketStore) -> None:
    await store.persist(message(kind="event", routed=route(), channel="wechat", account="a",
                                identities=[Identity(kind="wechat_openid", value="o1")],
                                email=None))
    [logged] = await all_events(store)
    assert (logged["type"], logged["ticket_id"], logged["desk"]) == (
        "message.created", None, None)


async def test_ids_are_dense_and_ordered_under_concurrent_batches(
        store: TicketStore) -> None:
    await asyncio.gather(*(store.persist_many([message(routed=route()) for _ in range(5)])
                           for _ in range(8)))
    ids = [e["id"] for e in await all_events(store)]
    assert ids == list(range(1, 81))


async def test_the_fast_and_the_core_path_log_the_same_events(tmp_path: Path) -> None:
    logged = []
    for fast_path in (True, False):
        url = f"sqlite+aiosqlite:///{tmp_path}/{fast_path}.sqlite3"
        await migrate(url)
        engine = make_engine(url)
        store = TicketStore(engine, sqlite_fast_path=fast_path)
        try:
            await store.persist_many([message(f"k{i}", routed=route()) for i in range(3)])
            async with engine.connect() as conn:
                logged.append([(r.id, r.type, r.desk, r.actor, sorted(r.data))
                               for r in (await conn.execute(select(EVENTS))).all()])
        finally:
            await store.close()
            await engine.dispose()
    assert logged[0] == logged[1] and len(logged[0]) == 6


def test_type_filters_take_star_wildcards() -> None:
    tickets = TypeFilter.parse("ticket.*")
    assert tickets("ticket.created") and tickets("ticket.updated")
    assert not tickets("message.created")
    both = TypeFilter.parse("ticket.created, message.*")
    assert both("message.delivery_updated") and not both("ticket.updated")
    assert TypeFilter.parse("")("anything") and TypeFilter.parse(None)("x")
    assert not TypeFilter.parse("ticket.created")("ticket.createdX")


def test_routing_keys_are_type_then_desk() -> None:
    class Row:
        type = "ticket.created"
        desk = None
    assert routing_key(Row()) == "ticket.created.none"
    Row.desk = "aftersales"
    assert routing_key(Row()) == "ticket.created.aftersales"


async def test_the_rows_a_commit_hands_the_relay_publish_as_the_log_does(
        store: TicketStore) -> None:
    """The relay publishes recent rows from memory: what reading them back gives (PostgreSQL's
    jsonb orders `data`'s keys its own way, so the JSON is compared, not the bytes)."""
    await store.persist_many([message(routed=route("aftersales")) for _ in range(3)])
    await store.persist(message(kind="event", routed=route()))

    recent = store.recent_events.after(0, 100)
    stored = await store.events_after(0, 100)

    assert recent is not None and len(recent) == len(stored) >= 7
    assert [orjson.loads(orjson.dumps(envelope(row))) for row in recent] == [
        orjson.loads(orjson.dumps(envelope(row))) for row in stored]
    assert [routing_key(row) for row in recent] == [routing_key(row) for row in stored]


def test_recent_events_continue_a_position_or_say_to_read_the_log() -> None:
    recent = RecentEvents(limit=4)
    assert recent.after(0, 10) is None  # nothing here: the log decides
    recent.add([{"id": i} for i in (1, 2, 3)])
    assert [r["id"] for r in recent.after(0, 2)] == [1, 2]  # at most `limit`
    assert [r["id"] for r in recent.after(1, 10)] == [2, 3]
    assert recent.after(3, 10) is None  # all taken
    recent.add([{"id": 5}])  # id 4 committed elsewhere (another write path or process)
    assert recent.after(3, 10) is None
    recent.add([{"id": i} for i in (6, 7, 8, 9, 10)])  # over the limit: 5 and 6 dropped
    assert recent.after(5, 10) is None
    assert [r["id"] for r in recent.after(6, 10)] == [7, 8, 9, 10]
