"""The connector outbox: success while the broker is away, then drained in order, once each."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from connectors.webform import CHANNEL as WEBFORM
from intake.bus import Bus
from intake.errors import MessageTooLarge, Transient
from intake.message import Message
from intake.outbox import Outbox, Publisher
from intake.service import BUS, PUBLISHER, outbox_ready
from intake.settings import IntakeSettings
from intake.testing import connector_client
from tests.conftest import IN_CI, delete_topology
from tests.factories import form_message
from tests.support import BrokerProxy, eventually

WEBFORM_EXAMPLE = Path(__file__).resolve().parents[2] / "connectors/webform/example.yaml"


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
                                proxy: BrokerProxy | None = None,
                                **publisher_options: Any) -> AsyncIterator[Edge]:
    proxy = proxy or BrokerProxy()
    await proxy.reserve_port()  # nothing listens: connections are refused
    edge_bus = Bus(settings.model_copy(update={"amqp_url": proxy.url}), "webform")
    edge_bus.start()
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    publisher = Publisher(edge_bus, outbox, "webform", "webform", **publisher_options)
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
        # A message reaches the consumer before its confirm comes back
        # and is deleted from the outbox.
        await eventually(lambda: outbox.depth == 0, timeout=10)
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


def service_app(edge: Edge) -> web.Application:
    app = web.Application()
    app[BUS], app[PUBLISHER] = edge.bus, edge.publisher
    return app


# -- a full disk ---------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (root only), so that a write meets ENOSPC for real."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of `disk`; returns the file to delete to free it again."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as out:
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    with contextlib.suppress(OSError), filler.open("ab") as out:  # the last partial block
        while True:
            out.write(b"\0" * 512)
            out.flush()
    return filler


async def test_drain_survives_a_full_disk_after_the_publish_and_publishes_each_once(
        settings: IntakeSettings, tmp_path: Path) -> None:
    """The broker confirmed, the delete hits SQLITE_FULL: no repeat, /readyz told, then on."""
    with small_disk(tmp_path / "disk") as disk:
        async with edge_with_broker_down(settings, disk, stall_after_s=0.3,
                                         retry_first_s=0.1) as edge:
            sent = [form_message(f"f{i:03d}") for i in range(40)]
            for message in sent:
                await edge.publisher.publish(message)
            assert edge.outbox.depth == 40
            # Empty the write-ahead log into the database (another connection may), so that
            # the drain's delete must grow the log, and then leave no byte free.
            with contextlib.closing(sqlite3.connect(disk / "outbox.sqlite3")) as other:
                other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            filler = fill(disk)

            await edge.consumer_bus.connect()
            edge.consumer_bus.consume("router", edge.handler, Message)
            await edge.proxy.start()
            await eventually(lambda: len(edge.received) >= 40, timeout=30)
            problem = await eventually(edge.publisher.problem, timeout=30)
            assert "full" in problem, problem
            assert await outbox_ready(service_app(edge)) == problem  # /readyz: 503 with it
            assert edge.outbox.depth == 40  # published, but the delete failed
            assert not edge.publisher._draining.done()  # type: ignore[union-attr]

            filler.unlink()
            await eventually(lambda: edge.outbox.depth == 0, timeout=30)
            assert edge.publisher.problem() is None
            assert (await outbox_ready(service_app(edge)))["outbox_depth"] == 0
            late = form_message("f999")
            await edge.publisher.publish(late)
            await eventually(lambda: late.idempotency_key in edge.received, timeout=10)
            # Retried deletes did not publish anything again: each exactly once, in order.
            assert edge.received == [m.idempotency_key for m in [*sent, late]]


# -- returned by the broker ----------------------------------------------------------------


async def delete_queue(bus: Bus, logical: str) -> None:
    assert bus._connection is not None
    channel = await bus._connection.channel()
    try:
        await channel.queue_delete(bus.names(logical))
    finally:
        await channel.close()


async def test_a_message_no_queue_takes_is_retried_then_dead_lettered_unroutable(
        bus: Bus, tmp_path: Path) -> None:
    publisher = Publisher(bus, Outbox(tmp_path / "outbox.sqlite3"), "webform", "webform",
                          unroutable_attempts=3, retry_first_s=0.1)
    publisher.start()
    try:
        await delete_queue(bus, "router")  # `intake.inbound` now routes nowhere
        message = form_message("lost-queue")
        await publisher.publish(message)  # durable in the outbox: answered with success
        await eventually(lambda: publisher.outbox.depth == 0, timeout=30)
        letters = await eventually(bus.browse_dead, timeout=10)
        assert len(letters) == 1
        letter = letters[0]
        assert letter.reason == "unroutable"
        assert json.loads(letter.body)["idempotency_key"] == message.idempotency_key
        assert letter.exchange == bus.names("inbound")
        assert letter.routing_key == message.routing_key
        assert "3 attempts" in letter.error
    finally:
        await publisher.stop()
        publisher.outbox.close()


async def test_a_returned_message_reaches_the_queue_once_it_is_declared_again(
        settings: IntakeSettings, bus: Bus, tmp_path: Path) -> None:
    publisher = Publisher(bus, Outbox(tmp_path / "outbox.sqlite3"), "webform", "webform",
                          unroutable_attempts=1000, retry_first_s=0.1)
    publisher.start()
    consumer_bus = Bus(settings, "router-test")
    received: list[str] = []

    async def handler(message: Message) -> None:
        received.append(message.idempotency_key)

    try:
        await delete_queue(bus, "router")
        message = form_message("back-soon")
        await publisher.publish(message)
        await eventually(lambda: publisher._unroutable, timeout=10)  # returned at least once
        await consumer_bus.connect()  # declares and binds the router's queue again
        consumer_bus.consume("router", handler, Message)
        await eventually(lambda: received == [message.idempotency_key], timeout=30)
        await eventually(lambda: publisher.outbox.depth == 0, timeout=10)  # after the confirm
        assert await bus.browse_dead() == []
    finally:
        await publisher.stop()
        publisher.outbox.close()
        await consumer_bus.close()


# -- too large -----------------------------------------------------------------------------


async def router_queue_depth(bus: Bus) -> int:
    assert bus._connection is not None
    channel = await bus._connection.channel()
    try:
        queue = await channel.declare_queue(bus.names("router"), passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def test_a_message_over_the_size_limit_is_refused_before_the_outbox(
        settings: IntakeSettings, tmp_path: Path) -> None:
    small = settings.model_copy(update={"max_message_bytes": 4000})
    bus = Bus(small, "webform")
    await bus.connect()
    publisher = Publisher(bus, Outbox(tmp_path / "outbox.sqlite3"), "webform", "webform")
    publisher.start()
    try:
        with pytest.raises(MessageTooLarge) as caught:
            await publisher.publish(form_message("big", text="退款" * 2000))
        assert caught.value.reason == "message_too_large"
        assert publisher.outbox.depth == 0
        await publisher.publish(form_message("small"))  # the next one is not held up
        await eventually(lambda: router_queue_depth(bus))
        assert await router_queue_depth(bus) == 1
    finally:
        await publisher.stop()
        publisher.outbox.close()
        await delete_topology(bus)
        await bus.close()


async def test_the_web_form_answers_a_message_over_the_limit_with_413(
        settings: IntakeSettings, tmp_path: Path) -> None:
    tiny = settings.model_copy(update={"max_message_bytes": 300})  # any submission is bigger
    bus = Bus(tiny, "webform")
    await bus.connect()
    publisher = Publisher(bus, Outbox(tmp_path / "outbox.sqlite3"), "webform", "webform")
    publisher.start()
    client = await connector_client(WEBFORM, WEBFORM_EXAMPLE, publisher)
    try:
        fixture = WEBFORM_EXAMPLE.parent / "fixtures" / "contact_json"
        headers = json.loads(fixture.with_suffix(".headers.json").read_bytes())
        response = await client.post("/forms/contact/submissions",
                                     data=fixture.with_suffix(".json").read_bytes(),
                                     headers=headers)
        body = await response.json()
        assert response.status == 413, body
        assert body["error"] == "message_too_large"
        assert publisher.outbox.depth == 0
        assert await router_queue_depth(bus) == 0
    finally:
        await client.close()
        await publisher.stop()
        publisher.outbox.close()
        await delete_topology(bus)
        await bus.close()


# -- per-call deadline ---------------------------------------------------------------------


async def test_a_publish_deadline_bounds_the_broker_attempt_and_falls_back_to_the_outbox(
        settings: IntakeSettings, tmp_path: Path) -> None:
    proxy = BrokerProxy()
    slow = settings.model_copy(update={"publish_timeout_s": 600.0})  # never the limit here
    async with edge_with_broker_down(slow, tmp_path, proxy=proxy) as edge:
        await edge.consumer_bus.connect()
        edge.consumer_bus.consume("router", edge.handler, Message)
        await proxy.start()
        assert await edge.bus.wait_connected(20)
        first = form_message("d000")
        await edge.publisher.publish(first, timeout=5.0)  # the broker answers: direct
        await eventually(lambda: edge.received == [first.idempotency_key])
        assert edge.outbox.depth == 0

        proxy.silent = True
        stalled = form_message("d001")
        # Without the deadline this would wait for the 600 s publish timeout.
        await asyncio.wait_for(edge.publisher.publish(stalled, timeout=2.0), 30)
        assert edge.outbox.depth == 1  # the fsynced outbox took it

        await proxy.stop()  # cut the silent connections; the bus reconnects
        proxy.silent = False
        await proxy.start()
        await eventually(lambda: edge.outbox.depth == 0, timeout=60)
        await eventually(lambda: stalled.idempotency_key in edge.received, timeout=10)
        assert edge.received == [first.idempotency_key, stalled.idempotency_key]
