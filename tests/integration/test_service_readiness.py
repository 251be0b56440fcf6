"""A service's /readyz on the real broker: a consumer that cannot consume is named, 503."""

from __future__ import annotations

from typing import Any

import aio_pika
from aiohttp.test_utils import TestClient, TestServer

from intake import Consumer, Message, Service
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
