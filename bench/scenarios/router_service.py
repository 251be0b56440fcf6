"""The router service alone: consume → decide → confirmed publish, from a pre-filled queue.

The ticket core and the router are stopped, N messages are published (confirmed) to
`intake.inbound`, then the router starts and drains them into `intake.ticket_core`, which no one
consumes: the rate is how fast that queue fills (from the last poll that found it empty to
the Nth message).
Then the routed messages are read off that queue to check every key came through exactly once,
and the ticket core is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

import aio_pika
import orjson

from bench.check import ExactlyOnceFailed, check_exactly_once
from bench.result import Context, Result, Scenario
from intake.bus import Bus
from intake.message import Message
from intake.settings import IntakeSettings

WINDOW = 256


def inbound_message(i: int) -> bytes:
    return Message.model_validate({
        "idempotency_key": f"webform:contact:bench-router-{i}", "channel": "webform",
        "account": "contact", "kind": "form_submission",
        "sender": {"name": f"压测 {i}", "identities": [
            {"kind": "email", "value": f"bench{i % 500}@example.com", "verified": False}]},
        "subject": f"Bench router {i}", "text": "我的订单还没有到，请帮忙查一下。" * 4,
        "form": {"form_id": "contact", "fields": {
            "topic": ("enquiry", "after_sales", "complaint")[i % 3], "name": f"压测 {i}"}},
        "received_at": datetime.now(UTC)}).model_dump_json(exclude_none=True).encode()


class RouterService(Scenario):
    name = "router-service"
    order = 30
    needs_gateway = False  # it starts the router itself, once the queue is full

    async def run(self, ctx: Context) -> list[Result]:
        n = ctx.n(10000, 300)
        gateway = ctx.gateway
        await gateway.stop("router", "ticket-core")
        bus = Bus(IntakeSettings(bus_prefix=ctx.prefix, amqp_url=ctx.amqp_url), "bench")
        await bus.connect()  # declares the topology (the services may not have run yet)
        await bus.close()
        inbound, routed = bus.names("inbound"), bus.names("ticket_core")
        keys = [f"webform:contact:bench-router-{i}" for i in range(n)]
        ctx.log(f"router-service: {n} messages queued for the stopped router")
        connection = await aio_pika.connect(ctx.amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            for name in (bus.names("router"), routed):
                await (await channel.get_queue(name)).purge()
            exchange = await channel.get_exchange(inbound)
            window = asyncio.Semaphore(WINDOW)

            async def publish(i: int) -> None:
                try:
                    await exchange.publish(
                        aio_pika.Message(inbound_message(i), content_type="application/json",
                                         delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key="webform.contact")
                finally:
                    window.release()

            tasks = []
            for i in range(n):
                await window.acquire()
                tasks.append(asyncio.create_task(publish(i)))
            await asyncio.gather(*tasks)

            ctx.rss.reset()
            await gateway.start("router")
            # CPU is counted from here: the router's start-up (imports) is not routing.
            cpu_from = (await channel.declare_queue(routed, passive=True)
                        ).declaration_result.message_count or 0
            ctx.rss.reset()
            # The clock starts at the last poll that still saw nothing routed: the router
            # batches, so a small run can go from 0 to N between two polls.
            first_at: float | None = None
            empty_at, depth = time.perf_counter(), 0
            deadline = time.monotonic() + max(60.0, n / 100)
            while depth < n and time.monotonic() < deadline:
                polled_at = time.perf_counter()
                depth = (await channel.declare_queue(routed, passive=True)
                         ).declaration_result.message_count or 0
                if depth == 0:
                    empty_at = polled_at
                elif first_at is None:
                    first_at = empty_at
                if depth < n:
                    await asyncio.sleep(0.02)
            finished = time.perf_counter()
            rss = ctx.rss.peaks()
            cpu = ctx.rss.cpu_ms_per_message(depth - cpu_from) if depth > cpu_from else {}
            rate = (depth / (finished - first_at)
                    if first_at is not None and finished > first_at else None)

            seen = await drain_keys(connection, routed, depth)
        finally:
            await connection.close()
        await gateway.start("ticket-core")
        check = check_exactly_once(keys, [], seen)
        throughput = round(rate, 1) if rate else None
        result = Result(scenario=self.name, messages=n, load="pre-filled queue",
                        throughput=throughput, rss_mb=rss, ratio=ctx.ratio(throughput),
                        check=check.as_dict(),
                        extra={"routed": depth, "cpu_ms_per_message": cpu})
        ctx.log(f"router-service: {throughput} messages/s")
        if not check.ok:
            result.ok, result.failure = False, f"exactly-once check failed: {check.describe()}"
            raise ExactlyOnceFailed(f"{self.name}: {result.failure}", result)
        return [result]


async def drain_keys(connection: aio_pika.abc.AbstractConnection, queue_name: str,
                     expected: int) -> list[str]:
    """Take every message off the queue (no one else consumes it); return their keys."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=1000)
    queue = await channel.get_queue(queue_name)
    keys: list[str] = []
    complete = asyncio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        keys.append(orjson.loads(message.body)["idempotency_key"])
        if len(keys) >= expected:
            complete.set()

    tag = await queue.consume(on_message, no_ack=True)
    # Wait for the expected count, then a moment more so a duplicate would be seen too.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(complete.wait(), timeout=30)
    await asyncio.sleep(0.3)
    await queue.cancel(tag)
    await channel.close()
    return keys


SCENARIOS = [RouterService()]
