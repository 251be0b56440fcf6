"""A fake FreeSWITCH event socket (inbound mode) at the TCP level, from the ESL documentation:
`auth/request`, `auth` answered `+OK accepted` or `-ERR invalid` plus a disconnect notice,
`event plain …` answered, `api show channels as json` answered (`api/response`, a
`Content-Length` body `{"row_count": n, "rows": [...]}`, or `{"row_count": 0}` without rows),
then events (`Content-Length` bodies of URL-encoded headers) in random-sized chunks that split
headers, bodies and UTF-8 characters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import urllib.parse


def event(**fields: str) -> bytes:
    body = "".join(f"{k.replace('_', '-') if not k.startswith('variable_') else k}: "
                   f"{urllib.parse.quote(v)}\n" for k, v in fields.items()).encode()
    return (f"Content-Length: {len(body)}\nContent-Type: text/event-plain\n\n".encode()
            + body)


def channels_json(rows: list[dict[str, str]]) -> bytes:
    """`show channels as json` as mod_commands prints it: no `rows` key when there are none."""
    listing: dict[str, object] = {"row_count": len(rows)}
    if rows:
        listing["rows"] = rows
    return json.dumps(listing).encode()


class FakeEsl:
    """`events`: what each accepted session gets played (given a list, every session but the
    last drops the link after playing, mid-call); `channels`: the rows `show channels` lists
    in each session (none when not given)."""

    def __init__(self, events: bytes | list[bytes], *, password: str = "ClueCon-test-esl",
                 refuse_logins: int = 0, seed: int = 11,
                 channels: list[list[dict[str, str]]] | None = None) -> None:
        self.sessions = events if isinstance(events, list) else [events]
        self.channels = channels or []
        self.password = password
        self.refuse_logins = refuse_logins
        self.random = random.Random(seed)
        self.logins = 0
        self.accepted = 0
        self.subscriptions: list[str] = []
        self.commands: list[str] = []
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
            session = self.accepted
            self.accepted += 1
            subscription = (await reader.readuntil(b"\n\n")).decode().strip()
            self.subscriptions.append(subscription)
            writer.write(b"Content-Type: command/reply\n"
                         b"Reply-Text: +OK event listener enabled plain\n\n")
            with contextlib.suppress(TimeoutError):
                command = (await asyncio.wait_for(reader.readuntil(b"\n\n"), 2)).decode()
                self.commands.append(command.strip())
                if command.strip() == "api show channels as json":
                    rows = self.channels[session] if session < len(self.channels) else []
                    body = channels_json(rows)
                    writer.write(f"Content-Type: api/response\nContent-Length: {len(body)}"
                                 "\n\n".encode() + body)
            last = session >= len(self.sessions) - 1
            data = self.sessions[min(session, len(self.sessions) - 1)]
            while data:
                size = self.random.randint(1, 11)
                writer.write(data[:size])
                data = data[size:]
                await writer.drain()
                await asyncio.sleep(0)
            if last:
                await reader.read()  # until the client goes
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
