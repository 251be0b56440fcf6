"""The connector outbox: success while the broker is away, then drained in order, once each."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from intake.bus import Bus
from intake.errors import Transient
from intake.message import Message
from intake.outbox import Outbox, Publisher
from intake.settings import IntakeSettings
from tests.conftest import delete_topology
from tests.factories import form_message
from tests.support import BrokerProxy, eventually


@dataclass
class Edge:
    """A connector's publisher behind a broker that is down (nothing listens on its port)."""

    proxy: BrokerProxy
    bus: Bus
    outbox: Outbox
    publisher: Publisher
    consumer_bus: Bus  # the router's side, on the real broker
    received: list[str]

    async def handler(self, message: Message) -> None:
        self.received.append(message.idempotency_key)


@contextlib.asynccontextmanager
async def edge_with_broker_down(settings: IntakeSettings, tmp_path: Path,
                                ) -> AsyncIterator[Edge]:
    proxy = BrokerProxy()
    await proxy.reserve_port()  # nothing listens: connections are refused
    edge_bus = Bus(settings.model_copy(update={"amqp_url": proxy.url}), "webform")
    edge_bus.start()
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    publisher = Publisher(edge_bus, outbox, "webform", "webform")
    publisher.start()
    consumer_bus = Bus(settings, "router-test")
    try:
        yield Edge(proxy, edge_bus, outbox, publisher, consumer_bus, [])
    finally:
        await publisher.stop()
        await delete_topology(consumer_bus)
        await consumer_bus.close()
        await edge_bus.close()
        await proxy.stop()


async def test_messages_published_while_the_broker_refuses_arrive_in_order_exactly_once(
        settings: IntakeSettings, tmp_path: Path) -> None:
    async with edge_with_broker_down(settings, tmp_path) as edge:
        proxy, outbox, publisher, consumer_bus, received = (
            edge.proxy, edge.outbox, edge.publisher, edge.consumer_bus, edge.received)
        sent = [form_message(f"m{i:03d}") for i in range(30)]
        for message in sent:
            await publisher.publish(message)  # returns: durable in the outbox
        assert outbox.depth == 30
        # The outbox survives the process: a fresh handle on the file sees every message.
        assert Outbox(tmp_path / "outbox.sqlite3").depth == 30

        await proxy.start()  # the broker is back
        await consumer_bus.connect()
        consumer_bus.consume("router", edge.handler, Message)
        await eventually(lambda: len(received) >= 30, timeout=30)
        assert outbox.depth == 0
        # Messages published after the drain go straight to the broker, behind the others.
        late = form_message("m999")
        await publisher.publish(late)
        await eventually(lambda: len(received) == 31)
        assert received == [m.idempotency_key for m in [*sent, late]]


async def test_publish_fails_loudly_when_neither_broker_nor_outbox_can_take_it(
        settings: IntakeSettings, tmp_path: Path) -> None:
    proxy = BrokerProxy()
    await proxy.reserve_port()
    bus = Bus(settings.model_copy(update={"amqp_url": proxy.url}), "webform")
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    outbox.close()  # a closed database stands for a disk that refuses writes
    publisher = Publisher(bus, outbox, "webform")
    with pytest.raises(Transient) as caught:
        await publisher.publish(form_message("x"))
    assert caught.value.reason == "outbox_unwritable"


async def test_after_a_short_outage_new_messages_wait_for_the_drain_and_then_go_direct(
        settings: IntakeSettings, tmp_path: Path) -> None:
    """Under steady load a small backlog must end: new messages do not queue behind it."""
    async with edge_with_broker_down(settings, tmp_path) as edge:
        outbox, publisher = edge.outbox, edge.publisher
        appended = 0
        append = outbox.append

        async def counting_append(*args: Any, **kwargs: Any) -> None:
            nonlocal appended
            appended += 1
            await append(*args, **kwargs)

        outbox.append = counting_append  # type: ignore[method-assign]
        backlog = [form_message(f"b{i:03d}") for i in range(50)]
        for message in backlog:
            await publisher.publish(message)
        assert appended == 50
        await edge.proxy.start()
        await edge.bus.wait_connected(20)
        # Steady load right as the broker returns: 200 publishes, 20 at a time.
        later = [form_message(f"n{i:03d}") for i in range(200)]
        for start in range(0, len(later), 20):
            await asyncio.gather(*(publisher.publish(m) for m in later[start:start + 20]))
        assert appended == 50  # none of the new ones paid for the outbox
        assert outbox.depth == 0
        await edge.consumer_bus.connect()
        edge.consumer_bus.consume("router", edge.handler, Message)
        await eventually(lambda: len(edge.received) == 250, timeout=30)
        # The backlog first, then the rest.
        assert edge.received[:50] == [m.idempotency_key for m in backlog]
        assert sorted(edge.received[50:]) == sorted(m.idempotency_key for m in later)
