"""The load generator's lean HTTP client against a real aiohttp server."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bench.lean_http import LeanHttp


async def test_posts_reuse_one_kept_alive_connection(aiohttp_server: Any) -> None:
    peers: set[Any] = set()

    async def echo(request: web.Request) -> web.Response:
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        body = await request.read()
        return web.json_response({"key": request.headers["Idempotency-Key"],
                                  "length": len(body)}, status=201)

    app = web.Application()
    app.router.add_post("/forms/contact/submissions", echo)
    server = await aiohttp_server(app)
    client = LeanHttp("127.0.0.1", server.port)
    for i in range(5):
        status, body = await client.post("/forms/contact/submissions", "表单".encode() * i,
                                         {"Idempotency-Key": f"k{i}"})
        assert status == 201
        assert body == f'{{"key": "k{i}", "length": {6 * i}}}'.encode()
    assert len(peers) == 1  # one connection, kept alive
    await client.close()


async def test_a_connection_the_server_closed_is_not_reused(aiohttp_server: Any) -> None:
    async def closing(request: web.Request) -> web.Response:
        response = web.Response(status=503, text="bye")
        response.force_close()
        return response

    app = web.Application()
    app.router.add_post("/x", closing)
    server = await aiohttp_server(app)
    client = LeanHttp("127.0.0.1", server.port)
    assert await client.post("/x", b"", {}) == (503, b"bye")
    assert await client.post("/x", b"", {}) == (503, b"bye")  # a new connection
    await client.close()
