"""Replies going out through the loopback connector's sender, on the real broker.

An OutboundMessage published to `intake.outbound` (key `api.loop`) is consumed from
`intake.outbound.api`, delivered once into the sink even when the broker delivers it again,
and its DeliveryResult published to `intake.delivery` with the right status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from intake.bus import Bus
from intake.claims import owner_is_gone, this_process
from intake.errors import BrokerUnavailable, Unroutable
from intake.message import DeliveryResult, Identity, OutboundMessage
from intake.sending import SenderRunner
from intake.settings import IntakeSettings
from intake.state import StateStore
from tests.loopback.outbound import LoopbackSender, delivered
from tests.loopback.settings import LoopbackSettings

ACCOUNT = "loop"


def outbound(text: str = "Your order shipped.") -> OutboundMessage:
    return OutboundMessage(idempotency_key=f"reply:{uuid.uuid4()}", ticket_id="t-1",
                           channel="api", account=ACCOUNT, to=Identity(kind="email",
                                                                       value="ann@example.com"),
                           text=text)


class Results:
    """DeliveryResults as the ticket core would see them (a queue bound to intake.delivery)."""

    def __init__(self) -> None:
        self.items: list[DeliveryResult] = []
        self.arrived = asyncio.Event()

    async def take(self, result: DeliveryResult) -> None:
        self.items.append(result)
        self.arrived.set()

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[DeliveryResult]:
        async with asyncio.timeout(timeout):
            while len(self.items) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.items


async def listen_for_results(bus: Bus) -> Results:
    """Results from now on: the queue is bound before this returns (a result published
    earlier would have gone to the ticket core's queue only)."""
    await bus.declare_queue(f"{bus.service}.results", bindings=[("delivery", "#")])
    results = Results()
    bus.consume(f"{bus.service}.results", results.take, DeliveryResult, binding=("delivery", "#"))
    return results


@pytest.fixture
async def results(bus: Bus) -> Results:
    return await listen_for_results(bus)


@pytest.fixture
def sink(tmp_path: Path) -> Path:
    return tmp_path / "sink.jsonl"


@pytest.fixture
async def runner(bus: Bus, settings: IntakeSettings, sink: Path,
                 results: Results) -> AsyncIterator[SenderRunner]:
    runner = await start_runner(bus, settings, sink)
    yield runner
    await runner.close()
    await runner.state.close()
    await drop_queues(bus, "outbound.api", f"{bus.service}.results")


async def start_runner(bus: Bus, settings: IntakeSettings, sink: Path) -> SenderRunner:
    runner = SenderRunner(bus, "api", LoopbackSender, StateStore.from_settings(settings),
                          settings=LoopbackSettings(sink_path=sink), poll_s=0.1)
    await runner.start()
    return runner


async def publish(bus: Bus, message: OutboundMessage) -> None:
    """As the ticket core's relay does (mandatory); until the runner's queue is bound."""
    async with asyncio.timeout(15):
        while True:
            try:
                await bus.publish("outbound", f"{message.channel}.{message.account}",
                                  message.model_dump_json().encode(), message_id=str(message.id))
                return
            except Unroutable:
                await asyncio.sleep(0.1)


async def drop_queues(bus: Bus, *logical: str) -> None:
    if bus._connection is None:
        return
    channel = await bus._connection.channel()
    for name in logical:
        with contextlib.suppress(Exception):
            await channel.queue_delete(bus.names(name))
    with contextlib.suppress(Exception):
        await channel.close()


async def test_a_reply_is_delivered_and_reported_sent(
        bus: Bus, runner: SenderRunner, results: Results, sink: Path) -> None:
    message = outbound()
    await publish(bus, message)
    [result] = await results.wait_for(1)
    assert delivered(sink) == [str(message.id)]
    assert (result.outbound_id, result.status, result.channel, result.account) == (
        message.id, "sent", "api", ACCOUNT)
    assert result.provider_message_id == f"loop-{message.id}" and result.attempt == 1


async def test_a_message_delivered_twice_is_sent_once_and_its_result_published_again(
        bus: Bus, runner: SenderRunner, results: Results, sink: Path) -> None:
    message = outbound()
    await publish(bus, message)
    await results.wait_for(1)
    await publish(bus, message)  # the relay's at-least-once: the same outbound id again
    first, second = await results.wait_for(2)
    assert delivered(sink) == [str(message.id)]
    assert first == second  # the recorded result, not a new attempt


async def test_a_connection_lost_between_send_and_ack_does_not_send_again(
        bus: Bus, runner: SenderRunner, results: Results, sink: Path) -> None:
    """The process dies after the transport took the message, before the ack: the broker
    delivers it again (to this consumer once reconnected); the ledger says sent."""
    assert isinstance(runner.sender, LoopbackSender)
    cut = asyncio.Event()

    async def lose_the_connection(_message: OutboundMessage) -> None:
        assert bus._connection is not None
        await bus._connection.close()  # the ack and the result's publish cannot go out
        cut.set()

    runner.sender.after_send = lose_the_connection
    message = outbound()
    await publish(bus, message)
    await asyncio.wait_for(cut.wait(), 20)
    runner.sender.after_send = None
    [result] = await results.wait_for(1, timeout=30)
    assert result.status == "sent" and result.outbound_id == message.id
    assert delivered(sink) == [str(message.id)]
    assert runner.sender.attempts[str(message.id)] == 1


class Replica:
    """A second process of the connector: its own bus, the same state store and sink."""

    def __init__(self, settings: IntakeSettings, sink: Path) -> None:
        self.settings, self.sink = settings, sink

    async def __aenter__(self) -> Replica:
        self.bus = Bus(self.settings, "replica")
        await self.bus.connect(timeout=15)
        self.results = await listen_for_results(self.bus)
        self.runner = await start_runner(self.bus, self.settings, self.sink)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.close()
        await self.runner.state.close()
        await self.bus.close()


async def until_delivered(sink: Path, message: OutboundMessage) -> None:
    async with asyncio.timeout(20):
        while str(message.id) not in delivered(sink):  # noqa: ASYNC110 (a file, no event)
            await asyncio.sleep(0.05)


async def die(bus: Bus) -> None:
    """This process is gone: its connection drops and it never reconnects."""
    bus._closing = True
    assert bus._connection is not None
    await bus._connection.close()


class DyingBus:
    """The first process's bus: the delivery result's publish is where the process dies, so
    the ledger holds the outcome but neither the result nor the ack went out."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        return self.bus.consume(*args, **kwargs)

    async def publish(self, exchange: str, *args: Any, **kwargs: Any) -> None:
        if exchange == "delivery":
            await die(self.bus)
            raise BrokerUnavailable("the process died")
        await self.bus.publish(exchange, *args, **kwargs)


async def test_a_process_that_died_after_the_send_is_replaced_without_a_second_send(
        bus: Bus, settings: IntakeSettings, sink: Path) -> None:
    first = SenderRunner(DyingBus(bus), "api", LoopbackSender, StateStore.from_settings(settings),
                         settings=LoopbackSettings(sink_path=sink))
    await first.start()
    await asyncio.sleep(0.3)
    try:
        message = outbound()
        await publish(bus, message)
        await until_delivered(sink, message)
        async with Replica(settings, sink) as replica:
            [result] = await replica.results.wait_for(1, timeout=30)
            assert (result.status, result.outbound_id) == ("sent", message.id)
            assert delivered(sink) == [str(message.id)]
            await drop_queues(replica.bus, "outbound.api", f"{replica.bus.service}.results")
    finally:
        await first.close()
        await first.state.close()


async def test_a_send_cut_before_its_outcome_was_recorded_is_reported_unknown_not_repeated(
        bus: Bus, settings: IntakeSettings, sink: Path) -> None:
    """At most once: the transport may have taken it, so it is not sent again; the agent sees
    `failed` with reason `outcome_unknown` and may resend by hand."""
    first = await start_runner(bus, settings, sink)
    release = asyncio.Event()
    assert isinstance(first.sender, LoopbackSender)

    async def die_mid_send(_message: OutboundMessage) -> None:
        await die(bus)
        await release.wait()  # a dead process never returns from its send
        raise asyncio.CancelledError

    first.sender.after_send = die_mid_send
    try:
        message = outbound()
        await publish(bus, message)
        await until_delivered(sink, message)
        async with Replica(settings, sink) as replica:
            assert isinstance(replica.runner.sender, LoopbackSender)
            replica.runner.sender.send_timeout_s = 1.0
            [result] = await replica.results.wait_for(1, timeout=30)
            assert (result.status, result.reason) == ("failed", "outcome_unknown")
            assert delivered(sink) == [str(message.id)]
            assert replica.runner.sender.attempts[str(message.id)] == 0
            await drop_queues(replica.bus, "outbound.api", f"{replica.bus.service}.results")
    finally:
        release.set()
        await first.close()
        await first.state.close()


async def test_a_refused_message_is_reported_failed_with_its_reason(
        bus: Bus, runner: SenderRunner, results: Results, sink: Path) -> None:
    message = outbound("fail:mailbox_full")
    await publish(bus, message)
    [result] = await results.wait_for(1)
    assert (result.status, result.reason) == ("failed", "mailbox_full")
    assert delivered(sink) == []


async def test_a_transient_failure_is_retried_from_the_state_store_then_sent(
        bus: Bus, runner: SenderRunner, results: Results, sink: Path) -> None:
    message = outbound("retry:2:hello")
    await publish(bus, message)
    [result] = await results.wait_for(1)
    assert (result.status, result.attempt) == ("sent", 3)
    assert delivered(sink) == [str(message.id)]
    # The queue item is finished just after the result is published (a crash between the two
    # leaves a retry that finds the ledger done): give that write its moment.
    for _ in range(500):
        if not await runner.retries.depth():
            break
        await asyncio.sleep(0.01)
    assert await runner.retries.depth() == 0


async def test_retries_that_never_succeed_end_failed_with_the_transport_reason(
        bus: Bus, runner: SenderRunner, results: Results, sink: Path) -> None:
    message = outbound("retry:9:hello")
    await publish(bus, message)
    [result] = await results.wait_for(1)
    assert (result.status, result.reason, result.attempt) == ("failed", "sink_busy", 3)
    assert delivered(sink) == []


async def test_a_service_runs_its_channel_sender_from_a_cleanup_context(
        bus: Bus, settings: IntakeSettings, results: Results, sink: Path) -> None:
    """How a connector's service runs its sender: the bus context, then the sender's."""
    from aiohttp.test_utils import TestServer

    from intake.service import SERVICE_SETTINGS, Service, bus_context

    service = Service(name="api", port=0, settings=settings,
                      contexts=[bus_context, SenderRunner.context("api", LoopbackSender)],
                      state={SERVICE_SETTINGS: LoopbackSettings(sink_path=sink)})
    server = TestServer(service.build_app())
    await server.start_server()
    try:
        message = outbound()
        await publish(bus, message)
        [result] = await results.wait_for(1)
        assert (result.outbound_id, result.status) == (message.id, "sent")
        assert delivered(sink) == [str(message.id)]
    finally:
        await server.close()
        await drop_queues(bus, "outbound.api", f"{bus.service}.results")


async def test_a_claim_whose_process_is_gone_is_stale_at_once_not_after_the_send_timeout(
        bus: Bus, runner: SenderRunner, results: Results, sink: Path) -> None:
    """A restarted sender finds a "sending" claim left by a process that was killed: the
    claim names its owner (boot, PID namespace, pid, start time), which no longer runs, so
    the message is settled now rather than after the 60 s send timeout."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        "import json, sys; from intake.claims import this_process; "
        "print(json.dumps(this_process()), flush=True); sys.stdin.read()",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None
    owner = json.loads(await child.stdout.readline())
    assert owner is not None and owner["pid"] == child.pid
    assert not owner_is_gone(owner) and not owner_is_gone(this_process())
    child.kill()
    await child.wait()
    assert owner_is_gone(owner)
    message = outbound()
    await runner.ledger.put(str(message.id), {"state": "sending", "attempt": 1,
                                              "at": time.time(), "owner": owner})
    assert isinstance(runner.sender, LoopbackSender)
    runner.sender.send_timeout_s = 60.0  # the claim would go stale only after a minute
    started = time.monotonic()
    await publish(bus, message)
    [result] = await results.wait_for(1, timeout=30)
    assert (result.status, result.reason) == ("failed", "outcome_unknown")
    assert time.monotonic() - started < 10
    assert delivered(sink) == []
