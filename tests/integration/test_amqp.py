"""intake/amqp.py on the real RabbitMQ: coalesced writes and the lean confirmed publish."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import aiormq
import pytest

from intake import amqp
from intake.bus import Bus
from intake.errors import BrokerUnavailable
from intake.message import Message
from intake.settings import IntakeSettings
from tests.conftest import delete_topology
from tests.factories import form_message
from tests.support import eventually


def test_importing_the_kernel_changes_nothing_in_aiormq_until_a_bus_starts() -> None:
    script = ("import aiormq.connection, intake, intake.bus, intake.service\n"
              "from intake import amqp\n"
              "from intake.bus import Bus\n"
              "from intake.settings import IntakeSettings\n"
              "print(amqp.installed(), aiormq.connection.Connection.FRAME_BUFFER_SIZE)\n"
              "import asyncio\n"
              "async def main():\n"
              "    bus = Bus(IntakeSettings(amqp_url='amqp://guest:guest@127.0.0.1:1/'), 't')\n"
              "    bus.start()\n"
              "    await bus.close()\n"
              "asyncio.run(main())\n"
              "print(amqp.installed(), aiormq.connection.Connection.FRAME_BUFFER_SIZE)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)
    before, after = result.stdout.split("\n")[:2]
    assert before.split()[0] == "False"
    assert after == f"True {amqp.FRAME_BUFFER_SIZE}"


def test_the_pinned_aiormq_gets_coalesced_writes() -> None:
    assert amqp.install()
    assert amqp.installed()
    assert aiormq.connection.Connection.FRAME_BUFFER_SIZE == amqp.FRAME_BUFFER_SIZE


async def test_many_concurrent_publishes_are_confirmed_and_arrive_once(
        bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    stock_calls = 0
    stock = aiormq.Channel.basic_publish

    async def counting(self: aiormq.Channel, *args: Any, **kwargs: Any) -> Any:
        nonlocal stock_calls
        stock_calls += 1
        return await stock(self, *args, **kwargs)

    monkeypatch.setattr(aiormq.Channel, "basic_publish", counting)
    merged = 0
    original_of = amqp.MergedFrame.of

    def counting_merge(parts: list[Any]) -> amqp.MergedFrame:
        nonlocal merged
        merged += 1
        return original_of(parts)

    monkeypatch.setattr(amqp.MergedFrame, "of", staticmethod(counting_merge))
    sent = [form_message(f"c{i}") for i in range(600)]
    await asyncio.gather(*(bus.publish("inbound", m.routing_key, m.model_dump_json().encode())
                           for m in sent))
    assert stock_calls < len(sent) // 2  # the lean path took most of them
    assert merged > 0  # frames queued together went out in one write

    seen: list[str] = []

    async def handler(message: Message) -> None:
        seen.append(message.idempotency_key)

    bus.consume("router", handler, Message)
    await eventually(lambda: len(seen) == len(sent))
    await bus.stop_consumers()
    assert sorted(seen) == sorted(m.idempotency_key for m in sent)  # each once, none mixed up


async def test_a_publish_that_is_not_confirmed_in_time_is_broker_unavailable(
        bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    # Confirms never arrive: the broker's acks are dropped on the floor.
    monkeypatch.setattr(aiormq.Channel, "_confirm_delivery", lambda *args, **kwargs: None)
    sent = form_message("late")
    with pytest.raises(BrokerUnavailable, match="not confirmed"):
        await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode(),
                          timeout=0.2)


async def test_a_channel_closed_under_a_waiting_publish_fails_it_without_cancelling(
        bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiormq.Channel, "_confirm_delivery", lambda *args, **kwargs: None)
    sent = form_message("closed")
    publishing = asyncio.create_task(
        bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode(), timeout=10))
    await asyncio.sleep(0.1)
    channel = await bus._require_channel().get_underlay_channel()
    await channel.close()
    with pytest.raises(BrokerUnavailable):
        await publishing
    assert not publishing.cancelled()


@pytest.mark.parametrize("stock_from", [None, 5])
async def test_publish_many_keeps_the_order_even_when_the_stock_path_takes_over(
        bus: Bus, monkeypatch: pytest.MonkeyPatch, stock_from: int | None) -> None:
    calls = 0
    lean = amqp.start_publish

    def sometimes_lean(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return None if stock_from is not None and calls > stock_from else lean(*args, **kwargs)

    monkeypatch.setattr(amqp, "start_publish", sometimes_lean)
    sent = [form_message(f"o{i:03d}") for i in range(120)]
    await bus.publish_many("inbound", [(m.routing_key, m.model_dump_json().encode(), None)
                                       for m in sent])
    seen: list[str] = []

    async def handler(message: Message) -> None:
        seen.append(message.idempotency_key)

    bus.consume("router", handler, Message, prefetch=1)
    await eventually(lambda: len(seen) == len(sent))
    await bus.stop_consumers()
    assert seen == [m.idempotency_key for m in sent]


@pytest.mark.parametrize("window_s", [0.0, 0.1])
async def test_a_write_window_gathers_the_publishes_of_separate_tasks_into_one_write(
        settings: IntakeSettings, monkeypatch: pytest.MonkeyPatch, window_s: float) -> None:
    writes = 0
    frames = amqp.CoalescingFrameGenerator.__anext__

    async def counting(self: amqp.CoalescingFrameGenerator) -> Any:
        nonlocal writes
        frame = await frames(self)
        writes += 1
        return frame

    windowed = Bus(settings, "test-window", write_window_s=window_s)
    await windowed.connect(timeout=15)
    try:
        monkeypatch.setattr(amqp.CoalescingFrameGenerator, "__anext__", counting)
        sent = [form_message(f"w{i}") for i in range(10)]

        async def publish_later(turns: int, message: Message) -> None:
            for _ in range(turns):
                await asyncio.sleep(0)
            await windowed.publish("inbound", message.routing_key,
                                   message.model_dump_json().encode())

        if window_s:
            # Ten requests in ten turns of the event loop, each publishing on its own: all of
            # them well inside the window, so they go out in one write (or two).
            await asyncio.gather(*(publish_later(i, m) for i, m in enumerate(sent)))
            assert writes <= 2
        else:
            # At once: a publish that waits for its confirm before the next was written alone.
            for message in sent:
                await publish_later(0, message)
            # (The writer was already waiting for the first frame when the count began.)
            assert writes >= len(sent) - 1
        seen: list[str] = []

        async def handler(message: Message) -> None:
            seen.append(message.idempotency_key)

        windowed.consume("router", handler, Message)
        await eventually(lambda: len(seen) == len(sent))
        await windowed.stop_consumers()
        assert sorted(seen) == sorted(m.idempotency_key for m in sent)
    finally:
        await delete_topology(windowed)
        await windowed.close()


async def plain_queue(bus: Bus, logical: str, **arguments: Any) -> str:
    """A classic queue of this test's prefix, fed through the default exchange."""
    assert bus._connection is not None
    channel = await bus._connection.channel()
    name = bus.names(logical)
    await channel.declare_queue(name, durable=True, arguments=arguments or None)
    await channel.close()
    return name


async def drain(bus: Bus, name: str, expected: int) -> list[bytes]:
    """Get (and remove) `expected` messages from a queue, in queue order."""
    assert bus._connection is not None
    channel = await bus._connection.channel()
    queue = await channel.get_queue(name)
    bodies: list[bytes] = []
    try:
        for _ in range(expected * 50):
            incoming = await queue.get(no_ack=True, fail=False)
            if incoming is None:
                if len(bodies) >= expected:
                    break
                await asyncio.sleep(0.02)
                continue
            bodies.append(incoming.body)
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await channel.close()
    return bodies


@pytest.mark.parametrize("path", ["lean", "stock"])
async def test_a_message_the_broker_nacks_raises_and_the_next_one_goes_through(
        bus: Bus, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    if path == "stock":
        monkeypatch.setattr(amqp, "start_publish", lambda *args, **kwargs: None)
    name = await plain_queue(bus, "full", **{"x-overflow": "reject-publish",
                                             "x-max-length": 1})
    await bus.publish_to("", name, b'{"n": 1}')  # fills the queue
    with pytest.raises(BrokerUnavailable, match="refused"):  # basic.nack
        await bus.publish_to("", name, b'{"n": 2}')
    with pytest.raises(BrokerUnavailable, match="refused"):
        await bus.publish_to("", name, b'{"n": 3}')
    assert bus.connected  # a nack is not a broken channel
    assert await drain(bus, name, 1) == [b'{"n": 1}']


async def test_publish_many_raises_when_the_broker_nacks_one_of_them(bus: Bus) -> None:
    name = await plain_queue(bus, "full-many", **{"x-overflow": "reject-publish",
                                                  "x-max-length": 2})
    assert bus._connection is not None
    channel = await bus._connection.channel()
    await (await channel.get_queue(name)).bind(bus.names("outbound"), "full.#")
    await channel.close()
    with pytest.raises(BrokerUnavailable, match="refused"):
        await bus.publish_many("outbound", [("full.x", f'{{"n": {i}}}'.encode(), None)
                                            for i in range(4)])
    assert await drain(bus, name, 2) == [b'{"n": 0}', b'{"n": 1}']


@pytest.mark.parametrize("path", ["lean", "stock"])
async def test_bodies_larger_than_a_frame_arrive_whole_among_concurrent_small_ones(
        bus: Bus, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    if path == "stock":
        monkeypatch.setattr(amqp, "start_publish", lambda *args, **kwargs: None)
    channel = await bus._require_channel().get_underlay_channel()
    frame_max = channel.connection.connection_tune.frame_max
    big = [bytes([65 + i]) * (1024 * 1024 + i) for i in range(4)]  # 1 MiB: several frames
    assert len(big[0]) > frame_max
    small = [f'{{"small": {i}}}'.encode() for i in range(40)]
    name = await plain_queue(bus, "big")
    await asyncio.gather(*(bus.publish_to("", name, body) for body in [*big, *small]))
    bodies = await drain(bus, name, len(big) + len(small))
    assert sorted(bodies) == sorted([*big, *small])  # none cut, none mixed with another


async def test_concurrent_tasks_on_one_channel_each_keep_their_order(bus: Bus) -> None:
    """Tasks publishing at once on the one publish channel: each task's messages stay in order
    (batches interleave with single publishes, none is split or overtaken)."""
    name = await plain_queue(bus, "ordered")
    assert bus._connection is not None
    channel = await bus._connection.channel()
    await (await channel.get_queue(name)).bind(bus.names("outbound"), "ordered.#")
    await channel.close()
    tasks, per_task = 8, 60

    async def one_by_one(task: int) -> None:
        for seq in range(per_task):
            await bus.publish("outbound", f"ordered.{task}", f"{task}:{seq}".encode())

    async def in_batches(task: int) -> None:
        for start in range(0, per_task, 10):
            await bus.publish_many("outbound", [
                (f"ordered.{task}", f"{task}:{seq}".encode(), None)
                for seq in range(start, start + 10)])

    await asyncio.gather(*(one_by_one(t) if t % 2 else in_batches(t) for t in range(tasks)))
    bodies = await drain(bus, name, tasks * per_task)
    assert len(bodies) == tasks * per_task
    by_task: dict[str, list[int]] = {}
    for body in bodies:
        task, seq = body.decode().split(":")
        by_task.setdefault(task, []).append(int(seq))
    assert all(seqs == list(range(per_task)) for seqs in by_task.values())
    assert len(by_task) == tasks
