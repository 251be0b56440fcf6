"""A fake Asterisk Manager Interface at the TCP level, from the AMI documentation: banner,
`Action: Login` (refused the first N times), events played from a transcript in random-sized
chunks (splitting CRLF pairs and UTF-8 characters), `Ping` answered with its `ActionID`."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

TRANSCRIPTS = Path(__file__).resolve().parent / "transcripts"


def transcript(name: str) -> bytes:
    """A transcript file (LF, blank line between messages) as AMI bytes (CRLF)."""
    text = (TRANSCRIPTS / name).read_text(encoding="utf-8").strip("\n") + "\n\n"
    return text.replace("\n", "\r\n").encode()


def parse(raw: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in raw.decode().split("\r\n"):
        key, _, value = line.partition(": ")
        fields[key] = value
    return fields


class FakeAmi:
    def __init__(self, events: bytes, *, secret: str = "ami-test-secret",
                 refuse_logins: int = 0, seed: int = 7) -> None:
        self.events = events
        self.secret = secret
        self.refuse_logins = refuse_logins
        self.random = random.Random(seed)
        self.logins: list[float] = []  # when each login came
        self.pings = 0
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
            writer.write(b"Asterisk Call Manager/5.0.1\r\n")
            login = parse((await reader.readuntil(b"\r\n\r\n"))[:-4])
            self.logins.append(time.monotonic())
            action_id = login.get("ActionID", "")
            if login.get("Action") != "Login" or login.get("Secret") != self.secret \
                    or len(self.logins) <= self.refuse_logins:
                writer.write(f"Response: Error\r\nActionID: {action_id}\r\n"
                             "Message: Authentication failed\r\n\r\n".encode())
                await writer.drain()
                return
            writer.write(f"Response: Success\r\nActionID: {action_id}\r\n"
                         "Message: Authentication accepted\r\n\r\n".encode())
            await writer.drain()
            answering = asyncio.create_task(self._answer_pings(reader, writer))
            data = self.events
            while data:
                size = self.random.randint(1, 9)
                writer.write(data[:size])
                data = data[size:]
                await writer.drain()
                await asyncio.sleep(0)
            await answering
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer_pings(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        while True:
            action = parse((await reader.readuntil(b"\r\n\r\n"))[:-4])
            if action.get("Action") == "Ping":
                self.pings += 1
                writer.write(f"Response: Success\r\nActionID: {action.get('ActionID')}\r\n"
                             "Ping: Pong\r\n\r\n".encode())
                await writer.drain()
