"""The relay and the delivery consumer on the real RabbitMQ (and SQLite or PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from intake.bus import Bus
from intake.message import DeliveryResult, OutboundMessage, utcnow
from tests.support import eventually
from ticket_core import db
from ticket_core.consume import record_results
from ticket_core.relay import Relay
from ticket_core.replies import ReplyChannels, write_reply
from ticket_core.store import TicketStore
from ticket_core.writes import COUNTERS, OUTBOX

from .builders import message, route


class Envelope(BaseModel):
    """An event as published to intake.events (the test reads it back)."""

    model_config = ConfigDict(extra="forbid")
    id: int
    type: str
    occurred_at: str
    desk: str | None
    ticket_id: str | None
    customer_id: str | None
    actor: str | None
    data: dict[str, Any]


async def reply(store: TicketStore, channel: str = "email") -> str:
    stored = await store.persist(message(channel=channel, account="support@example.com",
                                         kind="message", routed=route()))
    assert stored.ticket_id is not None
    ticket_id = stored.ticket_id
    return await store.write(lambda c: write_reply(
        c, ticket_id, "Hello", [], ReplyChannels.parse(channel), utcnow()))


@contextlib.asynccontextmanager
async def running(relay: Relay) -> AsyncIterator[Relay]:
    relay.start()
    try:
        yield relay
    finally:
        await relay.stop()


@contextlib.asynccontextmanager
async def events_seen(bus: Bus) -> AsyncIterator[list[Envelope]]:
    """Every event published to intake.events while inside, in arrival order."""
    seen: list[Envelope] = []

    async def listener(event: Envelope) -> None:
        seen.append(event)

    bus.consume("events.test", listener, Envelope, binding=("events", "#"))
    await asyncio.sleep(0.5)
    try:
        yield seen
    finally:
        await bus.stop_consumers()
        await delete_queues(bus, "events.test")


async def delete_queues(bus: Bus, *logical: str) -> None:
    assert bus._connection is not None
    channel = await bus._connection.channel()
    for name in logical:
        with contextlib.suppress(Exception):
            await channel.queue_delete(bus.names(name))
    with contextlib.suppress(Exception):
        await channel.close()


async def test_a_reply_committed_before_the_relay_runs_goes_out_once_it_starts(
        store: TicketStore, bus: Bus) -> None:
    taken: list[OutboundMessage] = []

    async def connector(outbound: OutboundMessage) -> None:
        taken.append(outbound)

    bus.consume("outbound.email", connector, OutboundMessage, binding=("outbound", "email.#"))
    await asyncio.sleep(0.5)  # the queue and its binding are declared
    try:
        # Committed while no relay runs: what a crash between commit and publish leaves.
        outbound_id = await reply(store)
        async with store.engine.connect() as conn:
            assert (await conn.execute(select(OUTBOX.c.published_at))).scalar() is None

        async with running(Relay(store, bus, poll_s=0.2)):
            await eventually(lambda: len(taken) == 1)

            async def published() -> bool:
                async with store.engine.connect() as conn:
                    return (await conn.execute(select(OUTBOX.c.published_at))
                            ).scalar() is not None
            await eventually(published)
        # A second relay (a restart) finds nothing left to publish.
        async with running(Relay(store, bus, poll_s=0.2)) as second:
            await asyncio.sleep(1.0)
            assert second.published_outbound == 0 and second.failing_since is None
        assert [str(t.id) for t in taken] == [outbound_id]
        view = await store.get_message(outbound_id)
        assert view is not None and view.delivery is not None
        assert view.delivery.status == "pending"
    finally:
        await bus.stop_consumers()
        await delete_queues(bus, "outbound.email")


async def test_a_reply_no_connector_takes_is_recorded_failed_no_connector(
        store: TicketStore, bus: Bus) -> None:
    outbound_id = await reply(store)  # nothing is bound to intake.outbound

    async with running(Relay(store, bus, poll_s=0.2)):
        async def failed() -> bool:
            view = await store.get_message(outbound_id)
            return bool(view and view.delivery and view.delivery.status == "failed")
        await eventually(failed)

    view = await store.get_message(outbound_id)
    assert view is not None and view.delivery is not None
    assert view.delivery.reason == "no_connector"


async def test_events_are_published_in_id_order_once_and_the_cursor_is_kept(
        store: TicketStore, bus: Bus) -> None:
    async with events_seen(bus) as seen:
        async with running(Relay(store, bus, poll_s=0.2)):
            for i in range(3):
                await store.persist_many([message(routed=route("aftersales"))
                                          for _ in range(i + 1)])
            await eventually(lambda: len(seen) == 12)
        async with running(Relay(store, bus, poll_s=0.2)) as second:
            await asyncio.sleep(1.0)
    assert second.published_events == 0
    assert [e.id for e in seen] == list(range(1, 13))
    assert seen[0].type == "ticket.created" and seen[0].desk == "aftersales"
    async with store.engine.connect() as conn:
        relayed = (await conn.execute(select(COUNTERS.c.value).where(
            COUNTERS.c.name == db.EVENTS_RELAYED))).scalar()
    assert relayed == 12


async def test_events_of_every_write_path_go_out_in_order_once(
        store: TicketStore, bus: Bus) -> None:
    """Persisted batches hand their rows to the relay in memory; a reply's event is only in
    the log. Interleaved, each is published once, in id order."""
    async with events_seen(bus) as seen:
        async with running(Relay(store, bus, poll_s=0.2)) as relay:
            relay.gather_s = 0
            for _ in range(3):
                await store.persist_many([message(routed=route("aftersales"))
                                          for _ in range(2)])
                await reply(store)
                await asyncio.sleep(0.05)
            # The unroutable replies are recorded failed: their events come a little later.
            await eventually(lambda: len(seen) >= 21)
            await asyncio.sleep(1.0)
    total = await store.last_event_id()
    assert total > 21 and [e.id for e in seen] == list(range(1, total + 1))
    assert {e.type for e in seen} >= {"ticket.created", "message.created"}


async def test_the_delivery_consumer_records_results_and_dead_letters_unknown_ids(
        store: TicketStore, bus: Bus) -> None:
    outbound_id = await reply(store)
    bus.consume("ticket_core.delivery", record_results(store), DeliveryResult)
    try:
        for status in ("sent", "delivered"):
            result = DeliveryResult(outbound_id=uuid.UUID(outbound_id), channel="email",
                                    account="support@example.com", status=status)  # type: ignore[arg-type]
            await bus.publish("delivery", "email.support@example.com",
                              result.model_dump_json().encode())
        stranger = DeliveryResult(outbound_id=uuid.uuid4(), channel="email",
                                  account="support@example.com", status="sent")
        await bus.publish("delivery", "email.support@example.com",
                          stranger.model_dump_json().encode())

        async def delivered() -> bool:
            view = await store.get_message(outbound_id)
            return bool(view and view.delivery and view.delivery.status == "delivered")
        await eventually(delivered)
        letters = await eventually(lambda: bus.browse_dead())
        assert [letter.reason for letter in letters] == ["unknown_outbound"]
        assert orjson.loads(letters[0].body)["outbound_id"] == str(stranger.outbound_id)
    finally:
        await bus.stop_consumers()


async def test_the_relay_survives_a_broker_outage_and_publishes_once_it_is_back(
        store: TicketStore, bus: Bus, settings: Any) -> None:
    from tests.support import BrokerProxy

    taken: list[OutboundMessage] = []

    async def connector(outbound: OutboundMessage) -> None:
        taken.append(outbound)

    bus.consume("outbound.email", connector, OutboundMessage, binding=("outbound", "email.#"))
    await asyncio.sleep(0.5)
    proxy = BrokerProxy()
    await proxy.start()
    relay_bus = Bus(settings.model_copy(update={"amqp_url": proxy.url}), "relay-test")
    try:
        await relay_bus.connect(timeout=10)
        await proxy.stop()  # the broker "goes away" under the relay
        await eventually(lambda: not relay_bus.connected)
        async with running(Relay(store, relay_bus, poll_s=0.1)) as relay:
            outbound_id = await reply(store)
            await eventually(lambda: relay.failing_since is not None)
            await proxy.start()  # and comes back on the same port
            await eventually(lambda: len(taken) == 1, timeout=30)
            await eventually(lambda: relay.failing_since is None)
        assert [str(t.id) for t in taken] == [outbound_id]
    finally:
        await bus.stop_consumers()
        await delete_queues(bus, "outbound.email")
        await relay_bus.close()
        await proxy.stop()


def test_a_relay_without_progress_for_a_while_makes_the_service_unready() -> None:
    import time

    from ticket_core.relay import STALLED_AFTER_S

    relay = Relay(None, None)  # type: ignore[arg-type]
    assert relay.problem() is None
    relay.failing_since = time.monotonic() - 1
    assert relay.problem() is None  # a blip is not a stall
    relay.failing_since = time.monotonic() - STALLED_AFTER_S - 1
    assert "relay: no progress" in (relay.problem() or "")


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_relays_on_postgresql_take_turns_so_each_event_goes_out_once(
        store: TicketStore, bus: Bus) -> None:
    seen: list[Envelope] = []

    async def listener(event: Envelope) -> None:
        seen.append(event)

    bus.consume("events.test", listener, Envelope, binding=("events", "#"))
    await asyncio.sleep(0.5)
    try:
        async with running(Relay(store, bus, poll_s=0.05)) as first, \
                running(Relay(store, bus, poll_s=0.05)) as second:
            for _ in range(10):
                await store.persist_many([message(routed=route()) for _ in range(3)])
            await eventually(lambda: len(seen) >= 60)
            await asyncio.sleep(0.5)
        assert sorted(e.id for e in seen) == list(range(1, 61))
        assert sorted([first.published_events, second.published_events]) == [0, 60]
    finally:
        await bus.stop_consumers()
        await delete_queues(bus, "events.test")
