"""`INTAKE_BUS_DECLARE=false`: a service declares nothing, checks passively that its exchanges
and queues exist, names a missing one in its problems (so `/readyz`), and looks again instead
of declaring it (the RabbitMQ definitions create them, with no `configure` right needed)."""

from __future__ import annotations

import aio_pika

from intake.bus import Bus
from intake.bus.topology import exists
from intake.message import Message
from intake.settings import IntakeSettings
from tests.conftest import delete_topology
from tests.support import eventually


async def test_nothing_is_declared_a_missing_queue_is_named_then_found(
        settings: IntakeSettings) -> None:
    passive = Bus(settings.model_copy(update={"bus_declare": False}), "router")
    admin = Bus(settings, "admin")
    received: list[str] = []

    async def handler(message: Message) -> None:
        received.append(message.idempotency_key)

    try:
        await passive.connect(timeout=15)  # connected although nothing exists
        problems = passive.problems()
        assert "topology" in problems
        for name in ("exchange", "inbound", "queue", "router", "ticket_core", "dead"):
            assert name in problems["topology"]
        passive.consume("router", handler, Message)
        router_queue = passive.names("router")
        await eventually(lambda: router_queue in passive.problems().get("consumer:router", ""),
                         timeout=10)
        assert passive._connection is not None
        assert not await exists(passive._connection, router_queue, "queue")  # not declared
        # Ops create the topology (as the definitions would): the consumer starts on its own.
        await admin.connect(timeout=15)
        await eventually(lambda: not passive.problems(), timeout=30)
        from tests.factories import form_message

        sent = form_message("declared-by-ops")
        await admin.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
        await eventually(lambda: received == [sent.idempotency_key], timeout=10)
    finally:
        await passive.close()
        if admin.connected:
            await delete_topology(admin)
        await admin.close()


async def test_a_declaring_service_still_declares(settings: IntakeSettings) -> None:
    bus = Bus(settings, "router")
    try:
        await bus.connect(timeout=15)
        assert bus.missing_topology == []
        connection = await aio_pika.connect(settings.amqp_url)
        try:
            channel = await connection.channel()
            await channel.declare_queue(bus.names("router"), passive=True)
        finally:
            await connection.close()
    finally:
        await delete_topology(bus)
        await bus.close()
