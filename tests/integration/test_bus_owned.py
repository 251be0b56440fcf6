"""A connector's own exchanges and queues (`intake.<channel>.*`), declared through the bus."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from intake.bus import Bus
from intake.errors import BrokerUnavailable
from intake.message import Message
from intake.settings import IntakeSettings
from tests.conftest import delete_topology
from tests.factories import form_message
from tests.support import eventually


@pytest.fixture
async def sdk_bus(settings: IntakeSettings) -> AsyncIterator[Bus]:
    bus = Bus(settings, "sdk")
    await bus.connect(timeout=15)
    yield bus
    await bus.stop_consumers()
    assert bus._connection is not None
    channel = await bus._connection.channel()
    for queue in ("sdk.live.r1", "sdk.live.r2", "sdk.replies"):
        await channel.queue_delete(bus.names(queue))
    await channel.exchange_delete(bus.names("sdk.live"))
    await channel.close()
    await delete_topology(bus)
    await bus.close()


async def test_a_fanout_between_replicas_reaches_each_replica_queue(sdk_bus: Bus) -> None:
    bus = sdk_bus
    await bus.declare_exchange("sdk.live", "fanout")
    await bus.declare_queue("sdk.live.r1", bindings=[("sdk.live", "")], transient=True)
    await bus.declare_queue("sdk.live.r2", bindings=[("sdk.live", "")], transient=True)
    seen: dict[str, list[str]] = {"r1": [], "r2": []}

    def collect(replica: str):  # type: ignore[no-untyped-def]
        async def handler(message: Message) -> None:
            seen[replica].append(message.idempotency_key)
        return handler

    bus.consume("sdk.live.r1", collect("r1"), Message)
    bus.consume("sdk.live.r2", collect("r2"), Message)
    assert await bus.supervisor.wait_up("consumer:sdk.live.r1", 15)
    assert await bus.supervisor.wait_up("consumer:sdk.live.r2", 15)
    sent = form_message("live")
    await bus.publish("sdk.live", "", sent.model_dump_json().encode())
    await eventually(lambda: seen == {"r1": [sent.idempotency_key],
                                      "r2": [sent.idempotency_key]})


async def test_a_durable_queue_bound_to_a_core_exchange_is_a_quorum_queue(sdk_bus: Bus) -> None:
    bus = sdk_bus
    await bus.declare_queue("sdk.replies", bindings=[("outbound", "sdk.#")])
    seen: list[str] = []

    async def handler(message: Message) -> None:
        seen.append(message.idempotency_key)

    bus.consume("sdk.replies", handler, Message)
    sent = form_message("reply")
    await bus.publish("outbound", "sdk.app1", sent.model_dump_json().encode())
    await eventually(lambda: seen == [sent.idempotency_key])
    assert bus._connection is not None
    channel = await bus._connection.channel()
    # The broker refuses a redeclaration with other arguments: these are the queue's.
    await channel.declare_queue(bus.names("sdk.replies"), durable=True,
                                arguments=bus.queue_arguments())
    await channel.close()


@pytest.mark.parametrize("name", ["inbound", "router", "dead", "webform.live", "sdkx.live",
                                  "sdk.", "sdk"])
async def test_names_outside_the_channel_are_refused(sdk_bus: Bus, name: str) -> None:
    with pytest.raises(ValueError, match="only under its own name"):
        await sdk_bus.declare_exchange(name, "fanout")
    with pytest.raises(ValueError, match="only under its own name"):
        await sdk_bus.declare_queue(name)


async def test_a_binding_to_an_undeclared_exchange_is_refused(sdk_bus: Bus) -> None:
    with pytest.raises(ValueError, match="undeclared exchange"):
        await sdk_bus.declare_queue("sdk.live.r1", bindings=[("sdk.elsewhere", "")])


async def test_own_topology_is_declared_again_when_it_disappears(sdk_bus: Bus) -> None:
    bus = sdk_bus
    await bus.declare_exchange("sdk.live", "fanout")
    await bus.declare_queue("sdk.live.r1", bindings=[("sdk.live", "")], transient=True)
    seen: list[str] = []

    async def handler(message: Message) -> None:
        seen.append(message.idempotency_key)

    bus.consume("sdk.live.r1", handler, Message)
    assert await bus.supervisor.wait_up("consumer:sdk.live.r1", 15)
    assert bus._connection is not None
    channel = await bus._connection.channel()
    await channel.exchange_delete(bus.names("sdk.live"))  # and with it the binding
    await channel.queue_delete(bus.names("sdk.live.r1"))
    await channel.close()
    await eventually(lambda: bus.supervisor.states()["consumer:sdk.live.r1"].restarts >= 1)
    sent = form_message("again")

    async def published_and_seen() -> bool:
        # The queue is transient (a replica's own): a message published while a restart is
        # still under way may land in a queue that is then replaced. Publish again until one
        # arrives: what this test shows is that the topology comes back by itself.
        try:
            await bus.publish("sdk.live", "", sent.model_dump_json().encode())
        except BrokerUnavailable:  # no exchange (channel closed) or no queue (Unroutable)
            await eventually(lambda: bus.connected)
            return False
        with contextlib.suppress(AssertionError):
            await eventually(lambda: sent.idempotency_key in seen, timeout=3)
        return sent.idempotency_key in seen

    await eventually(published_and_seen, timeout=60, interval=0.2)
    assert set(seen) == {sent.idempotency_key}
