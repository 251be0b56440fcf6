"""`GET /api/v1/events` read by a real HTTP client while messages are persisted."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from ticket_core.api import api_routes, auth_middleware
from ticket_core.sse import events_handler
from ticket_core.store import TicketStore

from .builders import message, route

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


async def client_for(store: TicketStore, aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    app = web.Application(middlewares=[auth_middleware(TOKEN)])
    app.add_routes(api_routes(store))
    return await aiohttp_client(app)


async def read_events(response: ClientResponse, count: int,
                      timeout: float = 5.0) -> list[dict[str, Any]]:
    """The next `count` events of a stream: {id, event, data} each; comments are skipped."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with asyncio.timeout(timeout):
        while len(events) < count:
            line = (await response.content.readline()).decode().rstrip("\n")
            if not line:
                if "data" in current:  # a block with only `retry:` is no event
                    events.append(current)
                current = {}
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(": ")
            current[field] = orjson.loads(value) if field == "data" else value
    return events


async def test_new_rows_reach_an_open_stream_and_a_resume_continues_without_gap_or_repeat(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    client = await client_for(store, aiohttp_client)
    await store.persist(message(routed=route()))  # before the stream: not sent without an id

    async with client.get("/api/v1/events", headers=AUTH) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        first = await store.persist(message(routed=route("aftersales")))
        created, posted = await read_events(response, 2, timeout=1.5)
    assert (created["event"], posted["event"]) == ("ticket.created", "message.created")
    assert created["data"]["ticket_id"] == first.ticket_id
    assert created["data"]["desk"] == "aftersales"
    assert [int(created["id"]), int(posted["id"])] == [3, 4]

    # Two more tickets while nobody listens; resume from the last id seen.
    await store.persist_many([message(routed=route()) for _ in range(2)])
    async with client.get("/api/v1/events", headers={**AUTH, "Last-Event-ID": posted["id"]},
                          ) as response:
        resumed = await read_events(response, 4)
    assert [int(e["id"]) for e in resumed] == [5, 6, 7, 8]

    async with client.get("/api/v1/events", headers=AUTH,
                          params={"last_event_id": "0", "types": "ticket.*"}) as response:
        tickets = await read_events(response, 4)
    assert [e["event"] for e in tickets] == ["ticket.created"] * 4
    assert [int(e["id"]) for e in tickets] == [1, 3, 5, 7]


async def test_an_idle_stream_gets_comments(store: TicketStore,
                                            aiohttp_client: ClientFactory) -> None:
    app = web.Application(middlewares=[auth_middleware(TOKEN)])
    app.add_routes([events_handler(store, keepalive_s=0.2, poll_s=0.05)])
    client = await aiohttp_client(app)
    async with client.get("/api/v1/events", headers=AUTH) as response:
        lines = []
        async with asyncio.timeout(5):
            while len([line for line in lines if line == b": keepalive\n"]) < 2:
                lines.append(await response.content.readline())


async def test_the_stream_needs_the_token_and_refuses_bad_parameters(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    client = await client_for(store, aiohttp_client)
    assert (await client.get("/api/v1/events")).status == 401
    bad = await client.get("/api/v1/events", headers={**AUTH, "Last-Event-ID": "x"})
    assert bad.status == 400 and "last_event_id" in (await bad.json())["fields"]
    unknown = await client.get("/api/v1/events", headers=AUTH, params={"since": "1"})
    assert unknown.status == 400


async def test_an_open_stream_ends_when_the_server_shuts_down(store: TicketStore) -> None:
    from aiohttp import ClientSession
    from aiohttp.test_utils import TestServer

    app = web.Application(middlewares=[auth_middleware(TOKEN)])
    app.add_routes(api_routes(store))
    server = TestServer(app)
    await server.start_server()
    async with ClientSession() as http:
        async with http.get(server.make_url("/api/v1/events"), headers=AUTH) as response:
            assert response.status == 200
            await response.content.readline()
            closing = asyncio.create_task(server.close())
            # The stream ends (EOF) instead of holding the shutdown until a timeout; the
            # keepalive (15 s) is far off, so only the shutdown can end it.
            async with asyncio.timeout(10):
                while await response.content.readline():
                    pass
            await closing
