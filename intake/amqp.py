"""Cheaper AMQP for the gateway's hot path: coalesced writes and a lean confirmed publish.

One socket write per event-loop turn for aiormq, instead of one per frame, and optionally one
per short write window (`set_write_window`).

aiormq's writer task takes one frame from its queue and writes it: every publish, ack and
confirm-select is a `send` system call and a wake-up of the broker. Under load many frames are
queued by the time the writer runs (a router batch publishes dozens at once, a web form answers
dozens of requests per turn), so `install()` swaps in a frame source that joins everything
already queued into one write. Frames keep their order; drains and the final Close-Ok are
honoured as before. This is a swap of one module-level name, checked against the pinned
aiormq version: with another version the stock writer stays and the service logs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import uuid
from collections.abc import Awaitable, Iterable, Iterator
from importlib.metadata import version
from typing import Any

from aiormq import connection as aiormq_connection
from aiormq.abc import ChannelFrame, ConfirmationFrameType
from aiormq.channel import Channel
from aiormq.exceptions import ChannelInvalidStateError
from pamqp import commands as spec
from pamqp.header import ContentHeader

SUPPORTED = ("7.2.4",)
STOCK = aiormq_connection.FrameGenerator
WRITE_MAX_BYTES = 256 * 1024  # one write stays a bounded copy
# aiormq's write queue holds 10 frames; a router batch publishes ~100 at once, and every
# publish beyond the tenth would wait a loop turn. Confirms still bound what is in flight.
FRAME_BUFFER_SIZE = 1024
WINDOW_ATTRIBUTE = "intake_write_window_s"


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
        window = getattr(self.queue, WINDOW_ATTRIBUTE, 0.0)
        if window and not first.should_close:
            await asyncio.sleep(window)  # let the frames of other tasks join this write
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


def set_write_window(connection: Any, seconds: float) -> bool:
    """Hold each write of this connection `seconds` so that frames queued meanwhile join it.

    For a connector: at a few hundred requests a second each publish would otherwise be a
    write of its own, and each a wake-up of the broker (whose per-message cost then doubles).
    Two milliseconds gather several requests' publishes into one write. `connection` is an
    aio-pika or aiormq connection; returns False if the coalescing writer is not installed.
    """
    underlay = getattr(getattr(connection, "transport", None), "connection", connection)
    queue = getattr(underlay, "write_queue", None)
    if not installed() or queue is None:
        return False
    # The frame source only sees the queue (aiormq builds it from that alone), so the window
    # travels on the queue.
    setattr(queue, WINDOW_ATTRIBUTE, max(0.0, seconds))
    return True


def install() -> bool:
    """Use coalesced writes in every aiormq connection made from now on (idempotent)."""
    if version("aiormq") not in SUPPORTED:
        return False
    module: Any = aiormq_connection
    module.FrameGenerator = CoalescingFrameGenerator
    module.Connection.FRAME_BUFFER_SIZE = FRAME_BUFFER_SIZE
    return True


def start_publish(channel: Channel, body: bytes, *, exchange: str, routing_key: str,
                  properties: spec.Basic.Properties,
                  mandatory: bool = True) -> asyncio.Future[ConfirmationFrameType] | None:
    """The lean publish's synchronous half: frames queued, the confirmation future returned.

    `Channel.basic_publish` takes a lock, enters two context managers, builds a timeout and
    a countdown, and awaits a queue put for every message: about half of a web form request's
    AMQP cost. Here the delivery tag, the confirmation future and the frames are set up in one
    synchronous step (nothing can interleave on the event loop). Returns None whenever that
    shortcut is not clearly safe (another version of aiormq, a publish of the stock path under
    way, a full write queue, no confirms): the caller then takes the stock path.
    """
    queue = channel.write_queue
    lock: asyncio.Lock | None = getattr(channel, "_Channel__lock", None)  # basic_publish's
    if (not installed() or lock is None or lock.locked() or not channel.publisher_confirms
            or queue.full()):
        return None
    if channel.is_closed:
        raise ChannelInvalidStateError(f"{channel!r} closed")
    if not properties.message_id:  # returned messages are matched by it
        properties.message_id = uuid.uuid4().hex
    message_id = properties.message_id
    channel.delivery_tag += 1
    delivery_tag = channel.delivery_tag
    confirmation = channel.create_future()
    channel.confirmations[delivery_tag] = confirmation
    channel.message_id_delivery_tag[message_id] = delivery_tag
    queue.put_nowait(ChannelFrame(payload=marshal_publish(
        channel.number, channel.max_content_size, exchange, routing_key, mandatory, properties,
        body), should_close=False))

    def forget(_: asyncio.Future[Any]) -> None:
        if channel.message_id_delivery_tag.get(message_id) == delivery_tag:
            channel.message_id_delivery_tag.pop(message_id)

    confirmation.add_done_callback(forget)
    return confirmation


async def publish(channel: Channel, body: bytes, *, exchange: str, routing_key: str,
                  properties: spec.Basic.Properties, mandatory: bool = True,
                  timeout: float | None = None) -> ConfirmationFrameType | None:
    """A confirmed publish: the lean path when it applies, else aiormq's own; one timer."""
    confirmation = start_publish(channel, body, exchange=exchange, routing_key=routing_key,
                                 properties=properties, mandatory=mandatory)
    if confirmation is None:
        return await channel.basic_publish(
            body, exchange=exchange, routing_key=routing_key, properties=properties,
            mandatory=mandatory, timeout=timeout, wait=False)
    if timeout is None:
        return await confirmation
    expired = False

    def expire() -> None:
        nonlocal expired
        if not confirmation.done():
            expired = True
            confirmation.cancel()

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        return await confirmation
    except asyncio.CancelledError:
        if expired:
            raise TimeoutError(f"publish not confirmed within {timeout} s") from None
        raise
    finally:
        timer.cancel()


def start_publishes(channel: Channel, exchange: str,
                    items: Iterable[tuple[str, bytes, spec.Basic.Properties]],
                    mandatory: bool = True) -> list[Awaitable[ConfirmationFrameType | None]]:
    """Queue several publishes in order; returns what to await for each one's confirm.

    The lean path while it applies; once one publish needs the stock path, the rest take it
    too, so that none overtakes it (the stock path queues its frames later, under the lock).
    """
    confirmations: list[Awaitable[ConfirmationFrameType | None]] = []
    stock = False
    for routing_key, body, properties in items:
        confirmation = None if stock else start_publish(
            channel, body, exchange=exchange, routing_key=routing_key, properties=properties,
            mandatory=mandatory)
        if confirmation is None:
            stock = True
            confirmations.append(channel.basic_publish(
                body, exchange=exchange, routing_key=routing_key, properties=properties,
                mandatory=mandatory, wait=False))
        else:
            confirmations.append(confirmation)
    return confirmations


# The properties the gateway sets; a publish with any other goes through pamqp.
_LEAN_UNSET = ("app_id", "cluster_id", "content_encoding", "correlation_id", "expiration",
               "message_type", "priority", "reply_to", "timestamp", "user_id")
_FRAME_END = b"\xce"
_METHOD_FRAMES: dict[tuple[int, str, str, bool], bytes] = {}
_METHOD_FRAMES_MAX = 4096  # routing keys are few (`<type>.<desk>`, `<channel>.<account>`)


def marshal_publish(channel_number: int, max_content_size: int, exchange: str,
                    routing_key: str, mandatory: bool, properties: spec.Basic.Properties,
                    body: bytes) -> bytes:
    """The frames of one publish (method, content header, body), as pamqp marshals them.

    pamqp builds and encodes each frame field by field: about 15 µs a publish, the largest
    part of an event's relay cost. The gateway's publishes differ only in their routing key,
    message id and body, so the method frame is cached per key and the header written with
    struct; any property or header table beyond those goes through pamqp (a test holds the
    bytes to pamqp's for both).
    """
    key = (channel_number, exchange, routing_key, mandatory)
    method = _METHOD_FRAMES.get(key)
    if method is None:
        method = _marshal_frames(channel_number, [spec.Basic.Publish(
            exchange=exchange, routing_key=routing_key, mandatory=mandatory)])
        if len(_METHOD_FRAMES) >= _METHOD_FRAMES_MAX:
            _METHOD_FRAMES.clear()
        _METHOD_FRAMES[key] = method
    header = _lean_header(channel_number, properties, len(body))
    if header is None:
        header = _marshal_frames(channel_number, [
            ContentHeader(properties=properties, body_size=len(body))])
    if not body:
        return method + header
    if len(body) < max_content_size:
        return b"".join((method, header, struct.pack(">BHI", 3, channel_number, len(body)),
                         body, _FRAME_END))
    parts = [method, header]
    for start in range(0, len(body), max_content_size):
        chunk = body[start:start + max_content_size]
        parts += (struct.pack(">BHI", 3, channel_number, len(chunk)), chunk, _FRAME_END)
    return b"".join(parts)


def _lean_header(channel_number: int, properties: spec.Basic.Properties,
                 body_size: int) -> bytes | None:
    """The content header frame for content type, empty headers, delivery mode and message
    id only (in AMQP 0-9-1's flag and field order); None for anything else."""
    # pamqp leaves out a property that is None or "" (cluster_id defaults to "").
    if properties.headers or any(getattr(properties, name) not in (None, "")
                                 for name in _LEAN_UNSET):
        return None
    flags = 0
    fields: list[bytes] = []
    if properties.content_type:
        if (encoded := _shortstr(properties.content_type)) is None:
            return None
        flags |= 0x8000
        fields.append(encoded)
    if properties.headers is not None:  # an empty table: pamqp still sets the flag
        flags |= 0x2000
        fields.append(b"\x00\x00\x00\x00")
    if properties.delivery_mode is not None:
        flags |= 0x1000
        fields.append(bytes((properties.delivery_mode,)))
    if properties.message_id:
        if (encoded := _shortstr(properties.message_id)) is None:
            return None
        flags |= 0x0080
        fields.append(encoded)
    payload = struct.pack(">HHQH", 60, 0, body_size, flags) + b"".join(fields)
    return struct.pack(">BHI", 2, channel_number, len(payload)) + payload + _FRAME_END


def _shortstr(value: str) -> bytes | None:
    encoded = value.encode()
    return bytes((len(encoded),)) + encoded if len(encoded) < 256 else None


def _marshal_frames(channel_number: int, frames: list[Any]) -> bytes:
    return ChannelFrame.marshall(frames=frames, channel_number=channel_number).payload


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


__all__ = ["CoalescingFrameGenerator", "MergedFrame", "install", "installed",
           "marshal_publish", "publish",
           "start_publish", "start_publishes", "stock_writes"]
