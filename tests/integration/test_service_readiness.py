"""A service's /readyz on the real broker: a consumer that cannot consume is named, 503."""

from __future__ import annotations

from typing import Any

import aio_pika
from aiohttp.test_utils import TestClient, TestServer

from intake import BUS, Consumer, Identity, Message, OutboundMessage, Service
from intake.bus import Bus
from intake.service import bus_context
from tests.factories import form_message
from tests.support import eventually


async def test_a_consumer_that_cannot_consume_makes_the_service_unready_naming_it(
        bus: Bus) -> None:
    # Another connection owns a queue of that name, exclusive: the broker refuses every other
    # connection's declare and consume (RESOURCE_LOCKED) until the owner goes away.
    holder = await aio_pika.connect(bus.settings.amqp_urls[0])
    holder_channel = await holder.channel()
    await holder_channel.declare_queue(bus.names("probe"), exclusive=True)

    handled: list[str] = []

    def make_handler(app: Any) -> Any:
        async def handle(message: Message) -> None:
            handled.append(message.idempotency_key)

        return handle

    service = Service(name="readiness", port=0, settings=bus.settings,
                      consumers=[Consumer("probe", Message, make_handler,
                                         binding=("inbound", "webform.#"))],
                      contexts=[bus_context])
    client = TestClient(TestServer(service.build_app()))
    await client.start_server()
    try:
        async def unready() -> dict[str, Any] | None:
            response = await client.get("/readyz")
            body: dict[str, Any] = await response.json()
            problem = body["problems"].get("consumer:probe", "")
            return body if response.status == 503 and problem.startswith("down") else None

        body = await eventually(unready, timeout=20)
        assert body["components"]["broker"]["state"] == "up"  # only the consumer is down
        assert body["components"]["consumer:probe"]["critical"] is True

        await holder.close()  # the exclusive queue goes with its connection

        async def ready() -> bool:
            response = await client.get("/readyz")
            return response.status == 200

        await eventually(ready, timeout=20)
        await bus.publish("inbound", "webform.contact",
                          form_message("ready-1").model_dump_json().encode())
        await eventually(lambda: handled == ["webform:contact:ready-1"], timeout=20)
    finally:
        await client.close()
        await holder.close()
        cleanup = await bus._connection.channel()  # type: ignore[union-attr]
        await cleanup.queue_delete(bus.names("probe"))
        await cleanup.close()


async def test_a_sender_starts_once_the_bus_is_up_and_is_closed_after_the_bus(
        bus: Bus) -> None:
    events: list[tuple[str, Any]] = []

    class RecordingSender:
        """The shape of intake.sending.SenderRunner: start() registers its outbound consumer."""

        def __init__(self, app: Any) -> None:
            self.bus: Bus = app[BUS]

        async def start(self) -> None:
            events.append(("start", self.bus is not None))
            self.bus.consume("outbound.api", self.handle, OutboundMessage,
                             binding=("outbound", "api.#"))

        async def handle(self, message: OutboundMessage) -> None:
            events.append(("sent", message.text))

        async def close(self) -> None:
            events.append(("close", self.bus.connected))

    service = Service(name="sends", port=0, settings=bus.settings,
                      senders=[RecordingSender], contexts=[bus_context])
    client = TestClient(TestServer(service.build_app()))
    await client.start_server()
    try:
        async def consuming() -> bool:
            response = await client.get("/readyz")
            body = await response.json()
            state = body["components"].get("consumer:outbound.api", {}).get("state")
            return response.status == 200 and state == "up"

        await eventually(consuming, timeout=20)  # its queue is declared and bound
        reply = OutboundMessage(idempotency_key="reply-1", ticket_id="t1", channel="api",
                                account="acme", to=Identity(kind="api_user", value="u1"),
                                text="hello back")
        await bus.publish("outbound", "api.acme", reply.model_dump_json().encode())
        await eventually(lambda: ("sent", "hello back") in events, timeout=20)
    finally:
        await client.close()
        cleanup = await bus._connection.channel()  # type: ignore[union-attr]
        await cleanup.queue_delete(bus.names("outbound.api"))
        await cleanup.close()
    # Closed last: the bus had stopped delivering to it (disconnected) before.
    assert events[0] == ("start", True) and events[-1] == ("close", False)
