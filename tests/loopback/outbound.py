"""LoopbackSender: "delivers" each reply as a JSON line into a file (the sink).

Its text drives the transport, for tests: `fail:<reason>` is refused for good, `retry:<n>:…`
is refused `n` times as transient then sent. `fail_next` and `after_send` let a test break the
transport (`retry_next` once, transient) or cut the process between the send and its
acknowledgement.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from intake import Failed, OutboundMessage, RetryLater, SenderKit, SendOutcome, Sent

from .settings import LoopbackSettings


class LoopbackSender:
    max_attempts = 3
    retry_delays_s = (0.2, 0.2)
    send_timeout_s = 5.0

    def __init__(self, kit: SenderKit) -> None:
        settings = kit.settings if isinstance(kit.settings, LoopbackSettings) else (
            LoopbackSettings())
        self.sink: Path = settings.sink_path
        self.fail_next: str | None = None  # a reason: the next send fails for good
        self.retry_next: str | None = None  # a reason: the next send is refused, transient
        self.after_send: Callable[[OutboundMessage], Awaitable[None]] | None = None
        self.attempts: Counter[str] = Counter()

    async def send(self, message: OutboundMessage) -> SendOutcome:
        key = str(message.id)
        self.attempts[key] += 1
        if self.fail_next is not None:
            reason, self.fail_next = self.fail_next, None
            return Failed(reason)
        if self.retry_next is not None:
            reason, self.retry_next = self.retry_next, None
            return RetryLater(reason)
        if message.text.startswith("fail:"):
            return Failed(message.text.split(":", 2)[1] or "refused")
        if message.text.startswith("retry:"):
            times = int(message.text.split(":", 2)[1])
            if self.attempts[key] <= times:
                return RetryLater("sink_busy")
        self.deliver(message)
        if self.after_send is not None:
            await self.after_send(message)
        return Sent(provider_message_id=f"loop-{key}")

    def deliver(self, message: OutboundMessage) -> None:
        self.sink.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"outbound_id": str(message.id), "to": message.to.value,
                           "text": message.text}, ensure_ascii=False)
        with open(self.sink, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def delivered(sink: Path) -> list[str]:
    """The outbound ids written to a sink, in order (a repeat would show twice)."""
    if not sink.exists():
        return []
    return [json.loads(line)["outbound_id"] for line in sink.read_text("utf-8").splitlines()]
