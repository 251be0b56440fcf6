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
    """`sessions`: what each successful login gets played (the last one stays open; the
    others drop the link after playing, mid-call); `channels` what `CoreShowChannels` lists
    in each session."""

    def __init__(self, events: bytes | list[bytes], *, secret: str = "ami-test-secret",
                 refuse_logins: int = 0, seed: int = 7,
                 channels: list[list[dict[str, str]]] | None = None) -> None:
        self.sessions = events if isinstance(events, list) else [events]
        self.channels = channels or []
        self.accepted = 0
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
            session = self.accepted
            self.accepted += 1
            # Whole messages never interleave on a real link: the listing goes out before the
            # transcript starts streaming in pieces.
            action = parse((await reader.readuntil(b"\r\n\r\n"))[:-4])
            if action.get("Action") == "CoreShowChannels":
                self._list_channels(writer, action.get("ActionID", ""), session)
            answering = asyncio.create_task(self._answer_pings(reader, writer))
            last = session >= len(self.sessions) - 1
            data = self.sessions[min(session, len(self.sessions) - 1)]
            while data:
                size = self.random.randint(1, 9)
                writer.write(data[:size])
                data = data[size:]
                await writer.drain()
                await asyncio.sleep(0)
            if not last:
                answering.cancel()
                return  # the link drops mid-call
            await answering
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _list_channels(self, writer: asyncio.StreamWriter, action_id: str,
                       session: int) -> None:
        listed = self.channels[session] if session < len(self.channels) else []
        out = (f"Response: Success\r\nActionID: {action_id}\r\nEventList: start\r\n"
               "Message: Channels will follow\r\n\r\n")
        for channel in listed:
            out += "Event: CoreShowChannel\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in channel.items()) + f"ActionID: {action_id}\r\n\r\n"
        out += (f"Event: CoreShowChannelsComplete\r\nEventList: Complete\r\n"
                f"ListItems: {len(listed)}\r\nActionID: {action_id}\r\n\r\n")
        writer.write(out.encode())

    async def _answer_pings(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        while True:
            action = parse((await reader.readuntil(b"\r\n\r\n"))[:-4])
            if action.get("Action") == "Ping":
                self.pings += 1
                writer.write(f"Response: Success\r\nActionID: {action.get('ActionID')}\r\n"
                             "Ping: Pong\r\n\r\n".encode())
                await writer.drain()
