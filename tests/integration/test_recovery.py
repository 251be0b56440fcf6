"""The bus recovers without a restart: lost consumers, a lost publish channel, a new connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from intake.bus import Bus
from intake.errors import BrokerUnavailable, StorageUnavailable
from intake.message import Message
from intake.service import BUS, Service, broker_ready
from intake.settings import IntakeSettings
from intake.supervisor import Ready, Supervisor
from tests.conftest import delete_topology
from tests.factories import form_message
from tests.support import BrokerProxy, eventually


async def delete_queue_elsewhere(bus: Bus, logical: str) -> None:
    """What `rabbitmqctl delete_queue` does, from another connection than the bus's."""
    other = Bus(bus.settings, "ops")
    await other.connect(timeout=15)
    try:
        assert other._connection is not None
        channel = await other._connection.channel()
        await channel.queue_delete(bus.names(logical))
        await channel.close()
    finally:
        await other.close()


async def publish_until_routed(bus: Bus, exchange: str, routing_key: str, body: bytes) -> int:
    """Publish until the broker takes it (Unroutable / BrokerUnavailable meanwhile)."""
    refused = 0
    for _ in range(200):
        try:
            await bus.publish(exchange, routing_key, body)
            return refused
        except BrokerUnavailable:
            refused += 1
            await asyncio.sleep(0.05)
    raise AssertionError("never routed")


@pytest.mark.parametrize(("queue", "exchange"), [("ticket_core", "routed"),
                                                 ("router", "inbound")])
async def test_a_deleted_queue_is_declared_and_bound_again_and_consumed(
        bus: Bus, queue: str, exchange: str) -> None:
    seen: list[str] = []

    async def handler(message: Message) -> None:
        seen.append(message.idempotency_key)

    bus.consume(queue, handler, Message)
    first = form_message("before")
    await bus.publish(exchange, "support", first.model_dump_json().encode())
    await eventually(lambda: seen == [first.idempotency_key])
    channel_before = bus._consumers[0].channel

    await delete_queue_elsewhere(bus, queue)
    # The broker cancels the consumer; the supervisor declares, binds and consumes again.
    await eventually(lambda: bus.supervisor.states()[f"consumer:{queue}"].restarts >= 1)
    meanwhile = form_message("meanwhile")
    await publish_until_routed(bus, exchange, "support", meanwhile.model_dump_json().encode())
    await eventually(lambda: meanwhile.idempotency_key in seen)
    assert bus._consumers[0].channel is not channel_before
    assert bus.supervisor.problems() == {}
    assert bus.problems() == {}


async def test_a_consumer_channel_closed_by_the_broker_is_opened_again(bus: Bus) -> None:
    seen: list[str] = []

    async def handler(message: Message) -> None:
        seen.append(message.idempotency_key)

    spec = bus.consume("router", handler, Message)
    assert await bus.supervisor.wait_up("consumer:router", timeout=15)
    assert spec.underlay is not None
    # A precondition failure (an unknown delivery tag): the broker closes the channel.
    await spec.underlay.basic_ack(999_999)
    await eventually(lambda: bus.supervisor.states()["consumer:router"].restarts >= 1)
    assert "channel closed" in (bus.supervisor.states()["consumer:router"].error or "")
    sent = form_message("after-close")
    await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
    await eventually(lambda: seen == [sent.idempotency_key])


async def test_a_lost_publish_channel_is_reopened_without_touching_the_consumers(
        bus: Bus) -> None:
    seen: list[str] = []

    async def handler(message: Message) -> None:
        seen.append(message.idempotency_key)

    spec = bus.consume("router", handler, Message)
    assert await bus.supervisor.wait_up("consumer:router", timeout=15)
    consumer_channel = spec.channel
    publish_channel = bus._publish_channel
    # A publish to an exchange that does not exist: the broker closes the publish channel.
    with pytest.raises(BrokerUnavailable):
        await bus.publish_to(bus.names("missing"), "x", b"{}")
    await eventually(lambda: bus._publish_channel is not publish_channel and bus.connected)
    sent = form_message("after-reopen")
    await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
    await eventually(lambda: seen == [sent.idempotency_key])
    assert spec.channel is consumer_channel  # the consumer kept its channel
    assert bus.supervisor.states()["consumer:router"].restarts == 0
    assert bus.supervisor.states()["broker"].restarts == 0  # and the connection stayed


async def test_a_deleted_core_exchange_comes_back_with_its_bindings(bus: Bus) -> None:
    seen: list[str] = []

    async def handler(message: Message) -> None:
        seen.append(message.idempotency_key)

    bus.consume("router", handler, Message)
    assert await bus.supervisor.wait_up("consumer:router", timeout=15)
    other = Bus(bus.settings, "ops")
    await other.connect(timeout=15)
    try:
        assert other._connection is not None
        channel = await other._connection.channel()
        await channel.exchange_delete(bus.names("inbound"))
        await channel.close()
    finally:
        await other.close()
    sent = form_message("redeclared")
    refused = await publish_until_routed(bus, "inbound", sent.routing_key,
                                         sent.model_dump_json().encode())
    assert refused >= 1  # the first publish found no exchange and lost the channel
    await eventually(lambda: seen == [sent.idempotency_key])


async def test_a_new_connection_closes_the_old_one(settings: IntakeSettings) -> None:
    bus = Bus(settings, "test")
    connections: list[Any] = []
    failed_once = False

    async def flaky_setup() -> None:
        nonlocal failed_once
        connections.append(bus._connection)
        if not failed_once:
            failed_once = True
            raise RuntimeError("set-up failed after the connection opened")

    bus.on_connected.append(flaky_setup)
    try:
        await bus.connect(timeout=20)
        assert len(connections) == 2
        assert connections[0] is not connections[1]
        assert connections[0].is_closed  # not left open beside the new one
        assert not connections[1].is_closed
    finally:
        await delete_topology(bus)
        await bus.close()


async def test_the_connection_comes_back_and_the_consumers_with_it(
        settings: IntakeSettings) -> None:
    proxy = BrokerProxy()
    await proxy.start()
    bus = Bus(settings.model_copy(update={"amqp_url": proxy.url}), "test")
    seen: list[str] = []

    async def handler(message: Message) -> None:
        seen.append(message.idempotency_key)

    try:
        await bus.connect(timeout=10)
        bus.consume("router", handler, Message)
        assert await bus.supervisor.wait_up("consumer:router", timeout=15)
        first_connection = bus._connection
        await proxy.stop()
        await eventually(lambda: not bus.connected)
        await eventually(lambda: "broker" in bus.problems())
        await proxy.start()
        assert await bus.wait_connected(20)
        assert first_connection is not None and first_connection.is_closed
        await eventually(lambda: bus.problems() == {}, timeout=20)
        sent = form_message("after-reconnect")
        await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
        await eventually(lambda: sent.idempotency_key in seen, timeout=15)
    finally:
        await delete_topology(bus)
        await bus.close()
        await proxy.stop()


async def test_problems_name_the_broker_and_the_consumers_while_it_is_unreachable(
        settings: IntakeSettings) -> None:
    dead = BrokerProxy()
    await dead.reserve_port()
    bus = Bus(settings.model_copy(update={"amqp_url": dead.url}), "test")

    async def handler(message: Message) -> None:
        pass

    bus.start()
    bus.consume("ticket_core", handler, Message)
    try:
        await eventually(lambda: bus.supervisor.states()["broker"].state == "down")
        problems = bus.problems()
        assert set(problems) == {"broker", "consumer:ticket_core"}
        assert "down" in problems["broker"]
    finally:
        await bus.close()


async def test_a_consumer_holding_messages_is_a_problem_until_the_outage_ends(
        bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    import intake.bus.consumer

    monkeypatch.setattr(intake.bus.consumer, "HOLD_FIRST_RETRY_S", 0.01)
    database_up = asyncio.Event()
    stored: list[str] = []

    async def handler(messages: list[Message]) -> None:
        if not database_up.is_set():
            raise StorageUnavailable("database restarting")
        stored.extend(m.idempotency_key for m in messages)

    bus.consume_batches("ticket_core", handler, Message, max_batch=10)
    assert await bus.supervisor.wait_up("consumer:ticket_core", timeout=15)
    sent = form_message("held")
    await bus.publish("routed", "support", sent.model_dump_json().encode())
    await eventually(lambda: "consumer:ticket_core" in bus.problems())
    assert "storage_unavailable" in bus.problems()["consumer:ticket_core"]
    database_up.set()
    await eventually(lambda: stored == [sent.idempotency_key])
    assert bus.problems() == {}


async def test_readyz_is_503_naming_the_consumer_that_is_down(
        bus: Bus, aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import intake.bus.consumer

    monkeypatch.setattr(intake.bus.consumer, "HOLD_FIRST_RETRY_S", 0.01)
    database_up = asyncio.Event()

    async def handler(message: Message) -> None:
        if not database_up.is_set():
            raise StorageUnavailable("database restarting")

    service = Service(name="test", port=0, settings=bus.settings, ready_checks=[broker_ready],
                      state={BUS: bus})
    client: TestClient[web.Request, web.Application] = await aiohttp_client(
        service.build_app())
    bus.consume("ticket_core", handler, Message)
    assert await bus.supervisor.wait_up("consumer:ticket_core", timeout=15)
    response = await client.get("/readyz")
    assert response.status == 200
    sent = form_message("outage")
    await bus.publish("routed", "support", sent.model_dump_json().encode())
    await eventually(lambda: "consumer:ticket_core" in bus.problems())
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 503
    assert "consumer:ticket_core" in body["problems"]["broker_ready"]
    database_up.set()
    await eventually(lambda: bus.problems() == {})
    response = await client.get("/readyz")
    assert response.status == 200


async def test_a_shared_supervisor_runs_the_bus_beside_other_components(
        settings: IntakeSettings) -> None:
    """A service hands its supervisor to the bus; the bus reports only its own components."""
    supervisor = Supervisor("shared")

    async def broken_listener(ready: Ready) -> None:
        raise OSError("port 2525 in use")

    supervisor.start("smtp", broken_listener)
    bus = Bus(settings, "shared", supervisor=supervisor)
    try:
        await bus.connect(timeout=15)

        async def handler(message: Message) -> None:
            pass

        bus.consume("router", handler, Message)
        assert await supervisor.wait_up("consumer:router", 15)
        await eventually(lambda: "smtp" in supervisor.problems())
        assert bus.problems() == {}
        assert set(supervisor.states()) == {"smtp", "broker", "consumer:router"}
    finally:
        await delete_topology(bus)
        await bus.close()
        assert set(supervisor.states()) == {"smtp"}  # the bus took away only its own
        await supervisor.stop()
