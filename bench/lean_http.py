"""A lean HTTP/1.1 client for the load generator: keep-alive connections, nothing else.

The load generator shares the machine's two cores with the gateway, so every microsecond it
spends per request is taken from the system under test. aiohttp's client costs ~0.15 ms of
CPU per request here; writing the request bytes and reading a Content-Length answer off a
kept-alive connection costs a fraction of that (`make bench` reports the load generator's CPU
per message as `load`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

MAX_HEAD_BYTES = 64 * 1024


class HttpError(Exception):
    """The answer was not HTTP/1.1 as expected (the connection is dropped)."""


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()


@dataclass
class LeanHttp:
    host: str
    port: int
    limit: int = 1024  # connections at most, as aiohttp's connector had
    timeout_s: float = 120.0
    _idle: list[Connection] = field(default_factory=list)
    _slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.limit)

    async def _connect(self) -> Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port,
                                                       limit=MAX_HEAD_BYTES)
        return Connection(reader, writer)

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """POST and return (status, body); a kept-alive connection is reused."""
        async with self._slots, asyncio.timeout(self.timeout_s):
            return await self._post(path, body, headers)

    def _reusable(self) -> Connection | None:
        while self._idle:
            connection = self._idle.pop()
            # The server may have closed an idle connection (its keep-alive timer).
            if not connection.reader.at_eof() and not connection.writer.is_closing():
                return connection
            connection.close()
        return None

    async def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        connection = self._reusable() or await self._connect()
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{head}"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        try:
            connection.writer.write(request)
            status, answer, keep = await read_response(connection.reader)
        except BaseException:
            connection.close()
            raise
        if keep:
            self._idle.append(connection)
        else:
            connection.close()
        return status, answer

    async def close(self) -> None:
        while self._idle:
            connection = self._idle.pop()
            connection.close()
            try:
                await connection.writer.wait_closed()
            except (OSError, ConnectionError):
                pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one answer with a Content-Length or chunked body."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HttpError(f"not an HTTP/1.x status line: {lines[0]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    keep = headers.get("connection", "").lower() != "close" and parts[0] == "HTTP/1.1"
    if "content-length" in headers:
        return status, await reader.readexactly(int(headers["content-length"])), keep
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(chunk[:-2])
        return status, b"".join(chunks), keep
    if status in (204, 304) or 100 <= status < 200:
        return status, b"", keep
    return status, await reader.read(), False  # the body ends with the connection
