"""An HTTP app on a test server with its own event loop, for synchronous hypothesis checks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from .harness import check_http_answer

OPEN: list[Edge] = []


class Edge:
    """Starts on first use; `request` answers (status, content type, body) and checks them."""

    def __init__(self, start: Callable[[], Awaitable[TestClient[Any, Any]]]) -> None:
        self._start = start
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client: TestClient[Any, Any] | None = None

    def _ready(self) -> tuple[asyncio.AbstractEventLoop, TestClient[Any, Any]]:
        if self.loop is None or self.client is None:
            self.loop = asyncio.new_event_loop()
            self.client = self.loop.run_until_complete(self._start())
            OPEN.append(self)
        return self.loop, self.client

    def run(self, coro: Awaitable[Any]) -> Any:
        loop, _ = self._ready()
        return loop.run_until_complete(coro)

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                data: bytes | None = None) -> tuple[int, str, bytes]:
        _, client = self._ready()

        async def send() -> tuple[int, str, bytes]:
            async with client.request(method, path, headers=headers, data=data,
                                      allow_redirects=False) as response:
                return response.status, response.content_type, await response.read()

        status, content_type, body = self.run(send())
        check_http_answer(status, content_type, body)
        return status, content_type, body

    def close(self) -> None:
        if self.loop is not None and self.client is not None:
            self.loop.run_until_complete(self.client.close())
            self.loop.close()
        self.loop = self.client = None


async def app_client(app: web.Application) -> TestClient[Any, Any]:
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def close_all() -> None:
    while OPEN:
        OPEN.pop().close()
