"""A fake FreeSWITCH event socket (inbound mode) at the TCP level, from the ESL documentation:
`auth/request`, `auth` answered `+OK accepted` or `-ERR invalid` plus a disconnect notice,
`event plain …` answered, then events (`Content-Length` bodies of URL-encoded headers) in
random-sized chunks that split headers, bodies and UTF-8 characters."""

from __future__ import annotations

import asyncio
import random
import urllib.parse


def event(**fields: str) -> bytes:
    body = "".join(f"{k.replace('_', '-') if not k.startswith('variable_') else k}: "
                   f"{urllib.parse.quote(v)}\n" for k, v in fields.items()).encode()
    return (f"Content-Length: {len(body)}\nContent-Type: text/event-plain\n\n".encode()
            + body)


class FakeEsl:
    def __init__(self, events: bytes, *, password: str = "ClueCon-test-esl",
                 refuse_logins: int = 0, seed: int = 11) -> None:
        self.events = events
        self.password = password
        self.refuse_logins = refuse_logins
        self.random = random.Random(seed)
        self.logins = 0
        self.subscriptions: list[str] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"Content-Type: auth/request\n\n")
            command = (await reader.readuntil(b"\n\n")).decode().strip()
            self.logins += 1
            if command != f"auth {self.password}" or self.logins <= self.refuse_logins:
                writer.write(b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n"
                             b"Content-Type: text/disconnect-notice\nContent-Length: 0\n\n")
                await writer.drain()
                return
            writer.write(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n")
            subscription = (await reader.readuntil(b"\n\n")).decode().strip()
            self.subscriptions.append(subscription)
            writer.write(b"Content-Type: command/reply\n"
                         b"Reply-Text: +OK event listener enabled plain\n\n")
            data = self.events
            while data:
                size = self.random.randint(1, 11)
                writer.write(data[:size])
                data = data[size:]
                await writer.drain()
                await asyncio.sleep(0)
            await reader.read()  # until the client goes
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
