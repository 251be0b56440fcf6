"""One socket write per event-loop turn for aiormq, instead of one per frame.

aiormq's writer task takes one frame from its queue and writes it: every publish, ack and
confirm-select is a `send` system call and a wake-up of the broker. Under load many frames are
queued by the time the writer runs (a router batch publishes dozens at once, a web form answers
dozens of requests per turn), so `install()` swaps in a frame source that joins everything
already queued into one write. Frames keep their order; drains and the final Close-Ok are
honoured as before. This is a swap of one module-level name, checked against the pinned
aiormq version: with another version the stock writer stays and the service logs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

from aiormq import connection as aiormq_connection
from aiormq.abc import ChannelFrame

SUPPORTED = ("7.2.4",)
STOCK = aiormq_connection.FrameGenerator
WRITE_MAX_BYTES = 256 * 1024  # one write stays a bounded copy


class MergedFrame(ChannelFrame):
    """Several queued frames as one payload; draining it drains each of them."""

    parts: tuple[ChannelFrame, ...]

    @classmethod
    def of(cls, parts: list[ChannelFrame]) -> MergedFrame:
        merged = cls(payload=b"".join(p.payload for p in parts),
                     should_close=any(p.should_close for p in parts))
        object.__setattr__(merged, "parts", tuple(parts))  # the dataclass is frozen
        return merged

    @property
    def should_drain(self) -> bool:
        return any(p.should_drain for p in self.parts)

    def drain(self) -> None:
        for part in self.parts:
            part.drain()


class CoalescingFrameGenerator(aiormq_connection.FrameGenerator):
    async def __anext__(self) -> ChannelFrame:
        if self.close_event.is_set():
            raise StopAsyncIteration
        first: ChannelFrame = await self.queue.get()
        self.queue.task_done()
        if first.should_close or self.queue.empty():
            return first
        parts = [first]
        size = len(first.payload)
        while size < WRITE_MAX_BYTES and not self.queue.empty():
            frame: ChannelFrame = self.queue.get_nowait()
            self.queue.task_done()
            parts.append(frame)
            size += len(frame.payload)
            if frame.should_close:  # nothing may follow the Close-Ok
                break
        return MergedFrame.of(parts)


def install() -> bool:
    """Use coalesced writes in every aiormq connection made from now on (idempotent)."""
    if version("aiormq") not in SUPPORTED:
        return False
    module: Any = aiormq_connection
    module.FrameGenerator = CoalescingFrameGenerator
    return True


def installed() -> bool:
    return aiormq_connection.FrameGenerator is CoalescingFrameGenerator


@contextlib.contextmanager
def stock_writes() -> Iterator[None]:
    """Connections made inside use aiormq's own writer (the benchmark's fixed yardstick)."""
    module: Any = aiormq_connection
    current = module.FrameGenerator
    module.FrameGenerator = STOCK
    try:
        yield
    finally:
        module.FrameGenerator = current


__all__ = ["CoalescingFrameGenerator", "MergedFrame", "install", "installed", "stock_writes"]
