"""A storage error that repeats fails its message (retried, then dead-lettered `unpersistable`);
only an outage holds the consumer. On the real broker."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from intake.bus import Bus
from intake.message import Message, Thread
from tests.support import eventually
from ticket_core.consume import UNPERSISTABLE_AFTER, persist_routed
from ticket_core.failures import storage_unavailable
from ticket_core.store import TicketStore

from .builders import message, route


async def test_a_conflict_that_repeats_is_dead_lettered_and_the_consumer_moves_on(
        store: TicketStore, bus: Bus) -> None:
    first = await store.persist(message("first", routed=route()))
    async with store.engine.begin() as conn:
        # Every new ticket now collides on number 1001: the same conflict at every attempt.
        await conn.execute(text("UPDATE counters SET value = 1000 WHERE name = 'ticket_number'"))
    calls = 0
    persist = persist_routed(store)

    async def counting(messages: list[Message]) -> None:
        nonlocal calls
        calls += 1
        await persist(messages)

    bad = message("bad", routed=route())
    good = message("good", routed=route(), thread=Thread(ticket_id=first.ticket_id))
    for m in (bad, good):
        await bus.publish("routed", "aftersales", m.model_dump_json().encode())
    bus.consume_batches("ticket_core", counting, Message, max_batch=10, max_wait_s=0.05)
    try:
        letters = await eventually(lambda: bus.browse_dead(), timeout=30)
        assert [letter.reason for letter in letters] == ["unpersistable"]
        assert "bad" in letters[0].body.decode()
        stored = await store.get_ticket(str(first.ticket_id))
        assert stored is not None
        assert [m.idempotency_key for m in stored.messages] == [
            "webform:contact:first", "webform:contact:good"]
        assert calls >= UNPERSISTABLE_AFTER
    finally:
        await bus.stop_consumers()


def wrapped(error: Exception) -> sa_exc.DBAPIError:
    return sa_exc.DBAPIError.instance("SELECT 1", (), error, sqlite3.Error)


@pytest.mark.parametrize(("error", "outage"), [
    (sqlite3.OperationalError("database is locked"), True),
    (sqlite3.OperationalError("unable to open database file"), True),
    (sqlite3.OperationalError("disk I/O error"), True),
    (sqlite3.OperationalError("no such table: messages"), False),
    (sqlite3.IntegrityError("UNIQUE constraint failed: tickets.number"), False),
])
def test_only_an_outage_counts_as_storage_unavailable(error: Exception, outage: bool) -> None:
    assert storage_unavailable(wrapped(error)) is outage
    assert storage_unavailable(ConnectionRefusedError()) is True
