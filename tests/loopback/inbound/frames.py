"""The frame edge: what a line-based transport (a TCP socket, a pipe) calls per frame.

It answers `OK` only once the message is durable (published and confirmed, or in the outbox)
and `RETRY` when it is not; a repeat of a frame it already took is dropped here (answered `OK`,
not published again), as the SDK's and telephony's edges do.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from typing import Any

from intake import Rejected, Transient, utcnow

from ..normalize import parse_frame, to_message
from ..settings import LoopbackAccounts

REMEMBERED = 10_000


class FrameEdge:
    def __init__(self, publisher: Any, accounts: LoopbackAccounts) -> None:
        self.publisher = publisher
        self.accounts = accounts
        self.seen: OrderedDict[str, None] = OrderedDict()

    async def handle_frame(self, line: bytes) -> str:
        """`OK`, `RETRY` or `ERR <reason>`: the transport writes it back to the client."""
        try:
            frame = parse_frame(line)
            if self.accounts.account(frame.account) is None:
                raise Rejected(f"no account {frame.account!r}", reason="account_unknown")
            message = to_message(frame, message_id=uuid.uuid4(), received_at=utcnow(),
                                 trace_id=uuid.uuid4().hex)
            if message.idempotency_key in self.seen:
                return "OK"
            await self.publisher.publish(message)
        except Transient:
            return "RETRY"
        except Rejected as exc:
            return f"ERR {exc.reason}"
        self.seen[message.idempotency_key] = None
        while len(self.seen) > REMEMBERED:
            self.seen.popitem(last=False)
        return "OK"
