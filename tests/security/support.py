"""Helpers of the hostile-input tests: an agent API on a real port, raw bytes over a socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

from ticket_core.api import api_routes, auth_middleware
from ticket_core.db import make_engine, migrate
from ticket_core.store import TicketStore

TOKEN = "s3cret-agent-token"
STORE = web.AppKey("store", TicketStore)


@asynccontextmanager
async def agent_api(tmp_path: Path, token: str = TOKEN) -> AsyncIterator[TestServer]:
    """The agent API on SQLite in `tmp_path`, listening on a free port."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'intake.sqlite3'}"
    await migrate(url)
    engine = make_engine(url)
    store = TicketStore(engine)
    app = web.Application(middlewares=[auth_middleware(token, store)])
    app.add_routes(api_routes(store))
    app[STORE] = store
    server = TestServer(app)
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()
        await engine.dispose()


async def send_raw(port: int, data: bytes, timeout_s: float = 5.0) -> bytes:
    """Write `data` as is and read the answer until the server closes or `timeout_s`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        chunks: list[bytes] = []
        async with asyncio.timeout(timeout_s):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP answer (0 when there is none)."""
    line = answer.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[1].isdigit() else 0


def get_with(authorization: bytes | None, path: bytes = b"/api/v1/tickets") -> bytes:
    header = b"Authorization: " + authorization + b"\r\n" if authorization is not None else b""
    return (b"GET " + path + b" HTTP/1.1\r\nHost: test\r\n" + header
            + b"Connection: close\r\n\r\n")
