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


@pytest.mark.parametrize("window_s", [0.0, 0.05])
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

        async def publish_later(delay: float, message: Message) -> None:
            await asyncio.sleep(delay)
            await windowed.publish("inbound", message.routing_key,
                                   message.model_dump_json().encode())

        # Ten requests 3 ms apart, each publishing on its own: 30 ms in all.
        await asyncio.gather(*(publish_later(i * 0.003, m) for i, m in enumerate(sent)))
        if window_s:
            assert writes <= 3  # held 50 ms: they went out together
        else:
            assert writes >= 8  # at once: about one write each
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
