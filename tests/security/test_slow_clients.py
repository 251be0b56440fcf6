"""Slow-loris clients are dropped after INTAKE_HTTP_READ_TIMEOUT_S while others are served."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

from aiohttp import web

from intake.service import Service, serve
from intake.settings import IntakeSettings

from .support import send_raw, status_of

TIMEOUT_S = 1.5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"size": len(await request.read())})


@contextlib.asynccontextmanager
async def running(timeout_s: float = TIMEOUT_S) -> AsyncIterator[int]:
    """A service through the real `serve` (the same runner settings as production)."""
    port = free_port()
    service = Service(name="slow-test", port=port,
                      settings=IntakeSettings(http_read_timeout_s=timeout_s),
                      routes=[web.post("/echo", echo)])
    stop = asyncio.Event()
    started = asyncio.Event()
    task = asyncio.create_task(serve([service], stop=stop, shutdown_timeout=2,
                                     started=lambda _: started.set()))
    await asyncio.wait_for(started.wait(), 10)
    try:
        yield port
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def dribble(port: int, head: bytes, body: bytes = b"", every_s: float = 0.3,
                  whole_head: bool = False) -> tuple[bytes, float]:
    """Send one byte at a time (the body only, with `whole_head`); the answer and its time."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    answer = b""
    try:
        if whole_head:
            writer.write(head)
            head = b""
        for byte in head + body:
            if reader.at_eof():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            with contextlib.suppress(TimeoutError):
                answer += await asyncio.wait_for(reader.read(65536), every_s)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while chunk := await reader.read(65536):
                    answer += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        writer.close()
    return answer, time.monotonic() - began


async def test_a_client_sending_its_headers_byte_by_byte_is_dropped() -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 100 + b"\r\n\r\n"
    async with running() as port:
        slow = asyncio.create_task(dribble(port, head))
        await asyncio.sleep(0.5)
        # Meanwhile everybody else is served at once.
        for _ in range(3):
            ok = await send_raw(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
                                b"Connection: close\r\n\r\n")
            assert status_of(ok) == 200
        answer, seconds = await slow
    assert answer == b"", answer[:200]  # closed before a whole head arrived: nothing to answer
    assert seconds < TIMEOUT_S + 2, seconds


async def test_a_client_sending_its_body_slowly_gets_408_and_is_dropped() -> None:
    head = (b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n")
    async with running() as port:
        slow = asyncio.create_task(dribble(port, head, b"x" * 200, whole_head=True))
        await asyncio.sleep(0.5)
        ok = await send_raw(port, head.replace(b"200", b"2") + b"{}")
        assert status_of(ok) == 200, ok[:200]
        answer, seconds = await slow
    assert status_of(answer) == 408, answer[:300]
    assert b'"error": "request_timeout"' in answer
    assert seconds < TIMEOUT_S + 2, seconds


async def test_an_idle_connection_that_never_sends_is_closed() -> None:
    async with running() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        began = time.monotonic()
        assert await asyncio.wait_for(reader.read(100), TIMEOUT_S + 3) == b""
        assert time.monotonic() - began >= TIMEOUT_S - 0.2
        writer.close()


async def test_a_body_sent_in_time_is_not_cut() -> None:
    async with running(timeout_s=5) as port:
        answer, _ = await dribble(port, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3"
                                  b"\r\nConnection: close\r\n\r\n", b"abc", every_s=0.5,
                                  whole_head=True)
    assert status_of(answer) == 200 and b'"size": 3' in answer, answer[:200]
