"""Dead letters on the real broker: `intake.dead` is a stream that listing never changes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import aiormq
import pytest

from intake.bus import Bus
from intake.bus.dead import DeadQueueOutdated, ReplayRunning
from intake.bus.topology import broker_delivery_limit
from intake.message import Message
from intake.settings import IntakeSettings
from tests.conftest import delete_topology
from tests.factories import form_message
from tests.support import eventually

REPO = Path(__file__).resolve().parents[2]
OUR_STREAMS = ("dead.replayed", "dead.legacy", "dead.replaying", "dead.migrating")


@pytest.fixture
async def bus(settings: IntakeSettings) -> AsyncIterator[Bus]:
    """The shared fixture's bus, and the ledger streams removed after the test too."""
    bus = Bus(settings, "test")
    await bus.connect(timeout=15)
    yield bus
    await delete_streams(bus)
    await delete_topology(bus)
    await bus.close()


async def delete_streams(bus: Bus) -> None:
    assert bus._connection is not None
    for logical in OUR_STREAMS:
        channel = await bus._connection.channel()
        try:
            await channel.queue_delete(bus.names(logical))
        except aiormq.exceptions.AMQPError:
            pass
        finally:
            if not channel.is_closed:
                await channel.close()


async def intake(*args: str, prefix: str) -> tuple[int, str, str]:
    env = dict(os.environ, INTAKE_BUS_PREFIX=prefix)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "intake.cli", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def kill(bus: Bus, n: int, prefix: str = "d") -> list[str]:
    """Dead-letter `n` form messages as the router would; returns their dead letter ids."""
    ids = []
    for i in range(n):
        message = form_message(f"{prefix}{i:03d}")
        ids.append(await bus.dead_letter(
            message.model_dump_json().encode(), "unknown_desk", f"desk {i} does not exist",
            queue=bus.names("router"), exchange=bus.names("inbound"),
            routing_key=message.routing_key))
    return ids


async def stream_length(bus: Bus) -> int:
    """What the broker reports for `intake.dead` (it catches up within about a second)."""
    assert bus._connection is not None
    channel = await bus._connection.channel()
    try:
        queue = await channel.declare_queue(bus.names("dead"), passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def test_a_hundred_listings_in_a_row_change_nothing(bus: Bus) -> None:
    ids = await kill(bus, 25)
    for _ in range(100):
        letters = await bus.browse_dead()
        assert [letter.id for letter in letters] == ids
    assert [letter.reason for letter in letters] == ["unknown_desk"] * 25
    assert [letter.offset for letter in letters] == list(range(25))
    assert await eventually(lambda: stream_length(bus)) == 25


async def test_two_operators_listing_at_once_both_see_every_letter_in_order(
        settings: IntakeSettings, bus: Bus) -> None:
    ids = await kill(bus, 25)
    other = Bus(settings, "operator-2")
    await other.connect()
    try:
        for _ in range(10):
            mine, theirs = await asyncio.gather(bus.browse_dead(), other.browse_dead())
            assert [letter.id for letter in mine] == ids
            assert [letter.id for letter in theirs] == ids
    finally:
        await other.close()


async def test_show_finds_a_letter_by_id(bus: Bus) -> None:
    ids = await kill(bus, 3)
    letter = await bus.find_dead(ids[1])
    assert letter is not None
    assert letter.error == "desk 1 does not exist"
    assert json.loads(letter.body)["idempotency_key"] == "webform:contact:d001"
    assert await bus.find_dead("no-such-letter") is None


async def test_replay_republishes_each_letter_once(bus: Bus) -> None:
    ids = await kill(bus, 3)
    seen: list[str] = []

    async def handler(message: Message) -> None:
        seen.append(message.idempotency_key)

    bus.consume("router", handler, Message)
    assert await bus.replay_dead() == ids
    await eventually(lambda: len(seen) == 3)
    assert await bus.replay_dead() == []  # again: nothing
    assert await bus.replay_dead([ids[0]]) == []  # by id: nothing either
    assert await bus.browse_dead() == []  # none is waiting for a replay ...
    kept = await bus.browse_dead(replayed=True)  # ... and every letter is still there
    assert [letter.id for letter in kept] == ids
    assert all(letter.replayed_at is not None for letter in kept)
    # One more message behind the replays: once it is in, nothing else can still come.
    marker = form_message("after-replays")
    await bus.publish("inbound", marker.routing_key, marker.model_dump_json().encode())
    await eventually(lambda: marker.idempotency_key in seen)
    assert sorted(seen) == sorted(["webform:contact:d000", "webform:contact:d001",
                                   "webform:contact:d002", marker.idempotency_key])


async def test_two_replays_at_once_republish_each_letter_once(
        settings: IntakeSettings, bus: Bus) -> None:
    ids = await kill(bus, 20)
    other = Bus(settings, "operator-2")
    await other.connect()
    try:
        outcomes = await asyncio.gather(bus.replay_dead(), other.replay_dead(),
                                        return_exceptions=True)
    finally:
        await other.close()
    replayed = [dead_id for outcome in outcomes if isinstance(outcome, list)
                for dead_id in outcome]
    assert sorted(replayed) == sorted(ids)
    assert all(isinstance(outcome, (list, ReplayRunning)) for outcome in outcomes), outcomes


async def test_the_brokers_own_dead_letters_land_in_the_stream_too(bus: Bus) -> None:
    """A quorum queue's delivery limit dead-letters through `x-dead-letter-exchange`."""
    message = form_message("crash-loop")
    await bus.publish("inbound", message.routing_key, message.model_dump_json().encode(),
                      message_id=str(message.id))
    assert bus._connection is not None
    channel = await bus._connection.channel()
    underlay = await channel.get_underlay_channel()
    deliveries = 0

    async def give_back(delivered: aiormq.abc.DeliveredMessage) -> None:
        nonlocal deliveries
        deliveries += 1  # as a consumer that crashes before its ack would
        await underlay.basic_nack(delivered.delivery_tag, requeue=True)  # type: ignore[arg-type]

    await underlay.basic_qos(prefetch_count=1)
    await underlay.basic_consume(bus.names("router"), give_back)
    [letter] = await eventually(bus.browse_dead, timeout=20)
    await channel.close()
    # The quorum queue's own x-delivery-limit (a safety net above the gateway's count).
    assert deliveries == broker_delivery_limit(bus.settings.delivery_limit) + 1
    assert letter.reason == "broker_delivery_limit"
    assert letter.queue == bus.names("router")
    assert letter.exchange == bus.names("inbound")
    assert letter.routing_key == message.routing_key
    assert letter.id == f"offset-{letter.offset}"

    seen: list[str] = []

    async def handler(replayed: Message) -> None:
        seen.append(replayed.idempotency_key)

    bus.consume("router", handler, Message)
    assert await bus.replay_dead([letter.id]) == [letter.id]
    await eventually(lambda: seen == [message.idempotency_key])


async def test_the_dlq_commands(bus: Bus, tmp_path: Path) -> None:
    prefix = bus.settings.bus_prefix
    code, out, _ = await intake("dlq", "list", prefix=prefix)
    assert (code, out.strip()) == (0, "no dead letters")
    ids = await kill(bus, 2)

    code, out, _ = await intake("dlq", "list", "--json", prefix=prefix)
    assert code == 0
    listed = json.loads(out)
    assert [letter["id"] for letter in listed] == ids
    assert [letter["idempotency_key"] for letter in listed] == [
        "webform:contact:d000", "webform:contact:d001"]
    assert all(letter["replayed_at"] is None for letter in listed)

    code, out, _ = await intake("dlq", "show", ids[1], prefix=prefix)
    assert code == 0
    shown = json.loads(out)
    assert shown["error"] == "desk 1 does not exist"
    assert shown["body"]["idempotency_key"] == "webform:contact:d001"

    repaired = tmp_path / "repaired.json"
    repaired.write_text(form_message("d001-repaired").model_dump_json())
    code, out, _ = await intake("dlq", "replay", ids[1], "--body", str(repaired),
                                prefix=prefix)
    assert code == 0 and f"replayed 1 dead letter(s)\n  {ids[1]}" in out
    code, out, err = await intake("dlq", "replay", ids[1], prefix=prefix)
    assert code == 1 and "replayed 0 dead letter(s)" in out and "not a dead letter" in err

    code, out, err = await intake("dlq", "list", prefix=prefix)
    assert code == 0 and ids[0] in out and ids[1] not in out
    assert "1 replayed letter(s) not shown" in err
    code, out, _ = await intake("dlq", "list", "--all", prefix=prefix)
    assert code == 0 and ids[0] in out and f"{ids[1]}" in out and "replayed 20" in out
    code, out, _ = await intake("dlq", "show", ids[1], prefix=prefix)
    assert json.loads(out)["replayed_at"] is not None

    seen: list[str] = []

    async def handler(message: Message) -> None:
        seen.append(message.idempotency_key)

    bus.consume("router", handler, Message)
    await eventually(lambda: seen == ["webform:contact:d001-repaired"])


async def test_an_older_versions_dead_queue_is_moved_into_the_stream(
        settings: IntakeSettings, bus_prefix: str) -> None:
    """Before this version `intake.dead` was a quorum queue; its letters are kept, in order."""
    connection = await aio_pika.connect(settings.amqp_url)
    names = Bus(settings, "setup").names
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.declare_exchange(names("dead"), aio_pika.ExchangeType.TOPIC,
                                              durable=True)
    old = await channel.declare_queue(names("dead"), durable=True,
                                      arguments={"x-queue-type": "quorum"})
    await old.bind(exchange, "#")
    old_ids = []
    for i in range(3):
        message = form_message(f"old{i}")
        old_ids.append(f"old-{i}")
        await exchange.publish(aio_pika.Message(
            message.model_dump_json().encode(), message_id=f"m{i}",
            headers={"x-intake-reason": "unknown_desk", "x-intake-dead-id": f"old-{i}",
                     "x-intake-exchange": names("inbound"),
                     "x-intake-routing-key": message.routing_key}), routing_key="unknown_desk")
    await connection.close()

    bus = Bus(settings, "test")
    await bus.connect()  # a service of this version starts: it keeps the old queue
    try:
        [new_id] = await kill(bus, 1, prefix="new")  # still lands safely in the old queue
        with pytest.raises(DeadQueueOutdated):
            await bus.browse_dead()  # never read by taking and giving back
        code, _, err = await intake("dlq", "list", prefix=bus_prefix)
        assert code == 1 and "intake dlq migrate" in err

        code, out, err = await intake("dlq", "migrate", prefix=bus_prefix)
        assert code == 0 and "moved 4 dead letter(s)" in out, err
        assert [letter.id for letter in await bus.browse_dead()] == [*old_ids, new_id]
        [newer] = await kill(bus, 1, prefix="newer")  # into the stream now
        assert await bus.migrate_dead() == 0  # a second run finds nothing to do
        letters = await bus.browse_dead()
        assert [letter.id for letter in letters] == [*old_ids, new_id, newer]
        assert letters[0].reason == "unknown_desk"
    finally:
        await delete_streams(bus)
        await delete_topology(bus)
        await bus.close()
