"""The ceiling: one hop through the same RabbitMQ with the gateway's guarantees, no gateway.

Persistent ~1.5 KB messages to a quorum queue with publisher confirms (at most `WINDOW`
unconfirmed), then consumed with manual acks and a prefetch. The hop rate is N / (publish time
+ consume time); every ratio in the table is to it.
"""

from __future__ import annotations

import asyncio
import time

import aio_pika

from bench.result import Context, Result, Scenario
from bench.stats import summarize
from intake.amqp import stock_writes

WINDOW = 256  # unconfirmed publishes in flight
PREFETCH = 256
BODY_BYTES = 1536  # a typical routed web form message is 1.3–1.8 KB of JSON


class Raw(Scenario):
    name = "raw"
    order = 10
    needs_gateway = False

    async def run(self, ctx: Context) -> list[Result]:
        n = ctx.n(20000, 500)
        ctx.log(f"raw: {n} persistent messages through a quorum queue")
        queue_name = f"{ctx.prefix}.bench.raw"
        body = (b'{"bench":"' + b"x" * (BODY_BYTES - 12) + b'"}')
        ctx.rss.reset()  # for the broker's (and this process's) CPU per message
        # Stock aio-pika/aiormq, as when the targets were set: the yardstick must not move
        # with the gateway's own client tuning (intake/amqp.py), or ratios would not compare.
        with stock_writes():
            connection = await aio_pika.connect(ctx.amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.declare_queue(
                queue_name, durable=True, arguments={"x-queue-type": "quorum"})
            window = asyncio.Semaphore(WINDOW)
            confirm_ms: list[float] = []

            async def publish(i: int) -> None:
                try:
                    started = time.perf_counter()
                    await channel.default_exchange.publish(
                        aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                         message_id=str(i)),
                        routing_key=queue_name)
                    confirm_ms.append((time.perf_counter() - started) * 1000)
                finally:
                    window.release()

            tasks = []
            started = time.perf_counter()
            for i in range(n):
                await window.acquire()
                tasks.append(asyncio.create_task(publish(i)))
            await asyncio.gather(*tasks)
            publish_s = time.perf_counter() - started

            consumer_channel = await connection.channel()
            await consumer_channel.set_qos(prefetch_count=PREFETCH)
            consume_queue = await consumer_channel.get_queue(queue_name)
            done = asyncio.Event()
            seen: set[str] = set()
            count = 0

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                nonlocal count
                count += 1
                seen.add(message.message_id or "")
                await message.ack()
                if count >= n:
                    done.set()

            started = time.perf_counter()
            tag = await consume_queue.consume(on_message)
            await asyncio.wait_for(done.wait(), timeout=120)
            consume_s = time.perf_counter() - started
            await consume_queue.cancel(tag)
            await channel.queue_delete(queue_name)
        finally:
            await connection.close()
        hop = n / (publish_s + consume_s)
        ctx.hop = hop
        cpu = ctx.rss.cpu_ms_per_message(n)
        ok = count == n and len(seen) == n
        return [Result(
            scenario="raw", messages=n, load=f"window {WINDOW}, prefetch {PREFETCH}",
            throughput=round(hop, 1), latency=summarize(confirm_ms), ratio=1.0, ok=ok,
            failure=None if ok else f"consumed {count} ({len(seen)} distinct) of {n}",
            check={"ok": ok, "sent": n, "stored": count, "distinct": len(seen)},
            extra={"publish_per_s": round(n / publish_s, 1),
                   "consume_per_s": round(n / consume_s, 1),
                   "hop_per_s": round(hop, 1), "body_bytes": len(body),
                   "latency_is": "publish → confirm", "cpu_ms_per_message": cpu})]


SCENARIOS = [Raw()]
