"""The router service alone: consume → decide → confirmed publish, from a pre-filled queue.

The ticket core and the router are stopped, N messages are published (confirmed) to
`intake.inbound`, then the router starts and drains them into `intake.ticket_core`, which no one
consumes: the rate is how fast that queue fills (from the last poll that found it empty to
the Nth message).
Then the routed messages are read off that queue to check every key came through exactly once.

A second line, rules reading `customer.*` with a warm lookup cache: every message reaches the
example's `vip` route (`customer.vip_level >= 3`), so the router looks each sender up; a small
aiohttp server on the ticket core's port answers the lookups. The queue holds first one message
per sender (the warm-up: each sender looked up once, then cached), then the N measured ones;
the rate counts from the last poll that saw no more than the warm-up routed. Afterwards the
ticket core and the router are started again as the other scenarios expect them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
import orjson
from aiohttp import web

from bench.check import ExactlyOnceFailed, check_exactly_once
from bench.result import Context, Result, Scenario
from intake.bus import Bus
from intake.message import Message
from intake.settings import IntakeSettings

WINDOW = 256
SENDERS = 500  # distinct senders: bench0@ … bench499@example.com
CUSTOMER_LOAD = "rules reading customer.*, warm lookup cache"
# The example's rules read `customer.vip_level`; these options replace its (default) lookup
# options for the customer line: a TTL longer than the run, so the cache stays warm, and a
# timeout the warm-up's burst of lookups on two loaded cores keeps within.
CUSTOMER_RULES = """\
options:
  customer_lookup: {timeout: 2s, ttl: 10m, negative_ttl: 10m, max_entries: 100000, backoff: 5s}
"""


def inbound_message(i: int, *, tag: str = "bench-router",
                    topics: tuple[str, ...] = ("enquiry", "after_sales", "complaint")) -> bytes:
    return Message.model_validate({
        "idempotency_key": f"webform:contact:{tag}-{i}", "channel": "webform",
        "account": "contact", "kind": "form_submission",
        "sender": {"name": f"压测 {i}", "identities": [
            {"kind": "email", "value": f"bench{i % SENDERS}@example.com", "verified": False}]},
        "subject": f"Bench router {i}", "text": "我的订单还没有到，请帮忙查一下。" * 4,
        "form": {"form_id": "contact", "fields": {
            "topic": topics[i % len(topics)], "name": f"压测 {i}"}},
        "received_at": datetime.now(UTC)}).model_dump_json(exclude_none=True).encode()


def customer_message(i: int, tag: str) -> bytes:
    """Topics that no route before the example's `vip` route takes: each needs the lookup."""
    return inbound_message(i, tag=tag, topics=("enquiry", "after_sales"))


class FakeCustomers:
    """The ticket core's `GET /api/v1/customers`, for the bench's senders (VIP level 0–4)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        for identity in request.query.getall("identity", []):
            kind, _, value = identity.partition(":")
            local = value.split("@")[0]
            if kind == "email" and local.startswith("bench") and local[5:].isdigit():
                j = int(local[5:])
                return web.json_response({"items": [{
                    "id": f"cus_bench_{j}", "name": f"压测 {j}", "identities": [],
                    "vip_level": j % 5, "language": "zh-CN", "tickets_count": j % 7,
                    "open_tickets_count": j % 2, "fields": {}}], "next": None})
        return web.json_response({"items": [], "next": None})


@contextlib.asynccontextmanager
async def customers_served(port: int, token: str) -> AsyncIterator[FakeCustomers]:
    core = FakeCustomers(token)
    app = web.Application()
    app.router.add_get("/api/v1/customers", core.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield core
    finally:
        await runner.cleanup()


class RouterService(Scenario):
    name = "router-service"
    order = 30
    needs_gateway = False  # it starts the router itself, once the queue is full

    async def run(self, ctx: Context) -> list[Result]:
        n = ctx.n(10000, 300)
        gateway = ctx.gateway
        await gateway.stop("router", "ticket-core")
        try:
            plain = await self.measure(ctx, n, lambda i: inbound_message(i),
                                       load="pre-filled queue", tag="bench-router")
            await gateway.stop("router")
            rules = gateway.data_dir / "bench-customer-rules.yaml"
            rules.write_text(CUSTOMER_RULES, encoding="utf-8")
            gateway.extra_env["INTAKE_RULES"] = str(rules)
            try:
                async with customers_served(gateway.ports["ticket-core"], gateway.token) as core:
                    warm = min(SENDERS, n)
                    customer = await self.measure(
                        ctx, n, lambda i: customer_message(i, "bench-router-customer"),
                        load=CUSTOMER_LOAD, tag="bench-router-customer",
                        warm=lambda j: customer_message(j, "bench-router-warm"), warm_n=warm,
                        requests=lambda: core.requests)
                    await gateway.stop("router")
            finally:
                gateway.extra_env.pop("INTAKE_RULES", None)
        finally:
            await gateway.start("ticket-core", "router")
        return [plain, customer]

    async def measure(self, ctx: Context, n: int, make: Callable[[int], bytes], *, load: str,
                      tag: str, warm: Callable[[int], bytes] | None = None, warm_n: int = 0,
                      requests: Callable[[], int] | None = None) -> Result:
        """Queue `warm_n` warm-up messages then `n` measured ones for the stopped router,
        start it, and time how fast the measured ones reach `intake.ticket_core`."""
        gateway = ctx.gateway
        bus = Bus(IntakeSettings(bus_prefix=ctx.prefix, amqp_url=ctx.amqp_url), "bench")
        await bus.connect()  # declares the topology (the services may not have run yet)
        await bus.close()
        inbound, routed = bus.names("inbound"), bus.names("ticket_core")
        keys = [f"webform:contact:{tag}-{i}" for i in range(n)]
        warm_keys = [f"webform:contact:bench-router-warm-{j}" for j in range(warm_n)]
        total = warm_n + n
        ctx.log(f"router-service [{load}]: {warm_n} warm-up and {n} messages queued for the "
                "stopped router")
        connection = await aio_pika.connect(ctx.amqp_url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            for name in (bus.names("router"), routed):
                await (await channel.get_queue(name)).purge()
            exchange = await channel.get_exchange(inbound)
            window = asyncio.Semaphore(WINDOW)

            async def publish(body: bytes) -> None:
                try:
                    await exchange.publish(
                        aio_pika.Message(body, content_type="application/json",
                                         delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key="webform.contact")
                finally:
                    window.release()

            tasks = []
            # In order: a quorum queue delivers first in, first out, so the warm-up goes first.
            for body in ([warm(j) for j in range(warm_n)] if warm else []):
                await window.acquire()
                tasks.append(asyncio.create_task(publish(body)))
            await asyncio.gather(*tasks)
            tasks = []
            for i in range(n):
                await window.acquire()
                tasks.append(asyncio.create_task(publish(make(i))))
            await asyncio.gather(*tasks)

            ctx.rss.reset()
            await gateway.start("router")
            # CPU is counted from here: the router's start-up (imports) is not routing.
            cpu_from = (await channel.declare_queue(routed, passive=True)
                        ).declaration_result.message_count or 0
            ctx.rss.reset()
            # The clock starts at the last poll that still saw no more than the warm-up routed:
            # the router batches, so a small run can go from there to all of it between polls.
            started: tuple[float, int] | None = None
            last_below = (time.perf_counter(), 0)
            depth = 0
            cpu_base: int | None = None if warm_n else cpu_from
            deadline = time.monotonic() + max(60.0, total / 100)
            while depth < total and time.monotonic() < deadline:
                polled_at = time.perf_counter()
                depth = (await channel.declare_queue(routed, passive=True)
                         ).declaration_result.message_count or 0
                if cpu_base is None and depth >= warm_n:
                    # The warm-up's lookups are not the measured messages' cost.
                    ctx.rss.reset()
                    cpu_base = depth
                if depth <= warm_n:
                    last_below = (polled_at, depth)
                elif started is None:
                    started = last_below
                if depth < total:
                    await asyncio.sleep(0.02)
            finished = time.perf_counter()
            rss = ctx.rss.peaks()
            measured = depth - (cpu_base if cpu_base is not None else depth)
            cpu = ctx.rss.cpu_ms_per_message(measured) if measured > 0 else {}
            rate = ((depth - started[1]) / (finished - started[0])
                    if started is not None and finished > started[0] else None)
            seen, lookups = await drain_keys(connection, routed, depth)
        finally:
            await connection.close()
        check = check_exactly_once(warm_keys + keys, [], seen)
        throughput = round(rate, 1) if rate else None
        # The measured decisions' `customer.lookup`. With a warm cache every one should say
        # `hit`, and the server should have been asked once per sender, during the warm-up.
        # The first line's router finds no ticket core: `error`, then `backoff`.
        measured_lookups = Counter(lookups[key] for key in keys if key in lookups)
        extra: dict[str, Any] = {"routed": depth, "cpu_ms_per_message": cpu,
                                 "lookup_results": dict(measured_lookups)}
        if warm_n:
            extra.update(warm_up=warm_n, senders=min(SENDERS, warm_n),
                         lookup_requests=requests() if requests else None)
        result = Result(scenario=self.name, messages=n, load=load,
                        throughput=throughput, rss_mb=rss, ratio=ctx.ratio(throughput),
                        check=check.as_dict(), extra=extra)
        ctx.log(f"router-service [{load}]: {throughput} messages/s, lookups "
                f"{extra['lookup_results']}"
                + (f", {extra['lookup_requests']} requests" if warm_n else ""))
        if not check.ok:
            result.ok, result.failure = False, f"exactly-once check failed: {check.describe()}"
            raise ExactlyOnceFailed(f"{self.name}: {result.failure}", result)
        return result


async def drain_keys(connection: aio_pika.abc.AbstractConnection, queue_name: str,
                     expected: int) -> tuple[list[str], dict[str, str]]:
    """Take every message off the queue (no one else consumes it); return their keys, and
    each key's decision's `customer.lookup`."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=1000)
    queue = await channel.get_queue(queue_name)
    keys: list[str] = []
    lookups: dict[str, str] = {}
    complete = asyncio.Event()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        body = orjson.loads(message.body)
        keys.append(body["idempotency_key"])
        lookups[body["idempotency_key"]] = (
            (body.get("route") or {}).get("customer") or {}).get("lookup") or "none"
        if len(keys) >= expected:
            complete.set()

    tag = await queue.consume(on_message, no_ack=True)
    # Wait for the expected count, then a moment more so a duplicate would be seen too.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(complete.wait(), timeout=30)
    await asyncio.sleep(0.3)
    await queue.cancel(tag)
    await channel.close()
    return keys, lookups


SCENARIOS = [RouterService()]
