"""An aiosmtpd sink on the test's loop: the relay outbound mail goes to, recording each mail."""

from __future__ import annotations

import asyncio
import email
import email.message
from dataclasses import dataclass, field
from email import policy
from typing import Any

from aiosmtpd.smtp import SMTP


class _RecordingSMTP(SMTP):
    """aiosmtpd's server, noting each MAIL and DATA command before it answers (a refused one
    too), so a test can tell that a mail never reached the relay."""

    async def smtp_MAIL(self, arg: str) -> None:
        self.event_handler.commands.append(f"MAIL {arg}")
        await super().smtp_MAIL(arg)

    async def smtp_DATA(self, arg: str) -> None:
        self.event_handler.commands.append("DATA")
        await super().smtp_DATA(arg)


@dataclass
class Sink:
    mails: list[email.message.EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    raws: list[bytes] = field(default_factory=list)  # each mail's DATA bytes as received
    answers: list[str] = field(default_factory=list)  # the next DATA answers, then 250
    size_limit: int = 33554432  # advertised in EHLO as SIZE (aiosmtpd's default), enforced
    commands: list[str] = field(default_factory=list)  # every MAIL and DATA, accepted or not
    server: asyncio.Server | None = None
    port: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.answers:
            return self.answers.pop(0)
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.raws.append(envelope.original_content)
        parsed = email.message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        self.mails.append(parsed)
        return "250 2.0.0 OK queued"

    async def start(self, port: int = 0) -> Sink:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _RecordingSMTP(self, enable_SMTPUTF8=True, hostname="sink.test",
                         data_size_limit=self.size_limit), "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
