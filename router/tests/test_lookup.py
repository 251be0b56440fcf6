"""The customer lookup against a real aiohttp server standing in for the ticket core's
`GET /api/v1/customers`: cached, shared, bounded, backing off and coming back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from router.consume import route_batch_handler
from router.lookup import FAILURES_BEFORE_BACKOFF, CustomerDirectory
from router.models import CustomerLookup
from router.reload import RulesHolder

from .conftest import DECLARATIONS, make_message
from .test_consume import RecordingBus

TOKEN = "lookup-test-token"
VIP = {"id": "cus_1", "name": "李雷", "identities": [], "vip_level": 5, "language": "zh-CN",
       "tickets_count": 3, "open_tickets_count": 1, "fields": {"tier": "gold"}}
OPTIONS = CustomerLookup(timeout=timedelta(milliseconds=100), ttl=timedelta(seconds=60),
                         negative_ttl=timedelta(seconds=10), backoff=timedelta(seconds=5))


class FakeCore:
    """The ticket core's customer lookup: known identities, a delay, a failure switch."""

    def __init__(self) -> None:
        self.known: dict[str, dict[str, Any]] = {"email:li@example.com": VIP}
        self.delay = 0.0
        self.failing = False
        self.requests: list[list[str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        identities = request.query.getall("identity")
        self.requests.append(identities)
        await asyncio.sleep(self.delay)
        if self.failing:
            return web.json_response({"error": "storage_unavailable"}, status=503)
        found = next((self.known[i] for i in identities if i in self.known), None)
        return web.json_response({"items": [found] if found else [], "next": None})


class Clock:
    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


Served = tuple[FakeCore, Clock, CustomerDirectory]


@pytest.fixture
async def served(aiohttp_server: Callable[[web.Application], Awaitable[TestServer]]
                 ) -> Any:
    core = FakeCore()
    app = web.Application()
    app.router.add_get("/api/v1/customers", core.handle)
    server = await aiohttp_server(app)
    clock = Clock()
    directory = CustomerDirectory(str(server.make_url("")), lambda: TOKEN, clock=clock)
    yield core, clock, directory
    await directory.close()


def sender(*identities: tuple[str, str]) -> Any:
    return make_message(sender={"name": "李雷", "identities": [
        {"kind": kind, "value": value} for kind, value in identities]})


async def test_a_hit_is_cached_for_its_ttl(served: Served) -> None:
    core, clock, directory = served
    message = sender(("phone", "+8613800138000"), ("email", "li@example.com"))
    snapshot, result = await directory.find(message, OPTIONS)
    assert result == "hit"
    assert snapshot == {"id": "cus_1", "vip_level": 5, "language": "zh-CN", "tickets_count": 3,
                        "open_tickets_count": 1, "fields": {"tier": "gold"}, "known": True}
    # every identity in one call, in the message's order
    assert core.requests == [["phone:+8613800138000", "email:li@example.com"]]
    assert (await directory.find(message, OPTIONS))[1] == "hit"
    assert len(core.requests) == 1
    clock.now += 61
    assert (await directory.find(message, OPTIONS))[1] == "hit"
    assert len(core.requests) == 2


async def test_a_miss_is_cached_for_the_shorter_negative_ttl(served: Served) -> None:
    core, clock, directory = served
    stranger = sender(("email", "new@example.com"))
    assert await directory.find(stranger, OPTIONS) == (None, "miss")
    clock.now += 9
    assert await directory.find(stranger, OPTIONS) == (None, "miss")
    assert len(core.requests) == 1
    core.known["email:new@example.com"] = VIP  # the customer writes in meanwhile
    clock.now += 2
    assert (await directory.find(stranger, OPTIONS))[1] == "hit"
    assert len(core.requests) == 2


async def test_an_anonymous_sender_is_a_miss_without_asking(served: Served) -> None:
    core, _, directory = served
    assert await directory.find(sender(), OPTIONS) == (None, "miss")
    assert core.requests == []


async def test_concurrent_lookups_of_one_sender_share_a_request(served: Served) -> None:
    core, _, directory = served
    core.delay = 0.03
    message = sender(("email", "li@example.com"))
    results = await asyncio.gather(*(directory.find(message, OPTIONS) for _ in range(20)))
    assert {result for _, result in results} == {"hit"}
    assert len(core.requests) == 1


async def test_a_slow_ticket_core_costs_at_most_the_timeout(served: Served) -> None:
    core, _, directory = served
    core.delay = 2.0
    started = time.monotonic()
    assert await directory.find(sender(("email", "li@example.com")), OPTIONS) == (None,
                                                                                   "timeout")
    elapsed = time.monotonic() - started
    assert 0.09 <= elapsed < 0.6, elapsed


async def test_five_failures_back_off_then_lookups_resume(served: Served) -> None:
    core, clock, directory = served
    core.failing = True
    for n in range(FAILURES_BEFORE_BACKOFF):
        assert await directory.find(sender(("email", f"u{n}@example.com")), OPTIONS) == (
            None, "error")
    assert len(core.requests) == FAILURES_BEFORE_BACKOFF
    # backing off: no request at all, and the decision says so
    assert await directory.find(sender(("email", "li@example.com")), OPTIONS) == (None,
                                                                                   "backoff")
    assert len(core.requests) == FAILURES_BEFORE_BACKOFF
    core.failing = False
    clock.now += 5.1  # the back-off is over: the next lookup asks again
    assert (await directory.find(sender(("email", "li@example.com")), OPTIONS))[1] == "hit"
    assert len(core.requests) == FAILURES_BEFORE_BACKOFF + 1
    # a success resets the count: one more failure does not back off again
    core.failing = True
    assert (await directory.find(sender(("email", "x@example.com")), OPTIONS))[1] == "error"
    core.failing = False
    assert (await directory.find(sender(("email", "y@example.com")), OPTIONS))[1] == "miss"


VIP_ROUTE = """\
- id: vip
  when: "customer.vip_level >= 3"
  desk: sales
"""
# The bound for tests that expect an answer in time on a machine shared with other sessions
# (the example's 50 ms is exceeded there now and then); still well under a hanging core's 2 s.
LOOKUP_BOUND = "options:\n  customer_lookup: {timeout: 500ms}\n" + DECLARATIONS


async def test_the_router_routes_by_what_the_lookup_found(
        served: Served, write_rules: Callable[..., Path]) -> None:
    core, _, directory = served
    holder = RulesHolder(write_rules(VIP_ROUTE, declarations=LOOKUP_BOUND))
    assert holder.load().reads_customer
    bus = RecordingBus()
    handle = route_batch_handler(holder, bus, directory)
    vip = sender(("email", "li@example.com"))
    stranger = make_message(idempotency_key="webform:contact:other", sender={
        "identities": [{"kind": "email", "value": "new@example.com"}]})
    core.delay = 0.01
    await handle([vip, stranger])
    desks = [(key, orjson.loads(body)["route"]) for _, key, body, _ in bus.published]
    assert [key for key, _ in desks] == ["sales", "general"]
    assert desks[0][1]["customer"]["lookup"] == "hit"
    assert desks[0][1]["customer"]["vip_level"] == 5
    assert desks[1][1]["customer"]["lookup"] == "miss"
    core.delay = 2.0  # the ticket core hangs: the message is still routed, by the default
    await handle([make_message(idempotency_key="webform:contact:third", sender={
        "identities": [{"kind": "email", "value": "third@example.com"}]})])
    _, key, body, _ = bus.published[-1]
    assert key == "general" and orjson.loads(body)["route"]["customer"]["lookup"] == "timeout"
