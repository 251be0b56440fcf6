"""Dead letters for ops: `intake.dead` is a stream, read from its start and never consumed.

Why a stream: a queue can only be browsed by taking messages and giving them back, and from
RabbitMQ 4.0 a quorum queue counts each return as a delivery attempt and drops a message past
its delivery limit (20 by default): about twenty listings would have emptied the old quorum
`intake.dead`. A stream (RabbitMQ 3.9 and later) is a log: each reader starts at an offset with
its own channel and cursor, acks only return credit, and nothing a reader does removes, counts
or reorders a letter, so any number of operators may list at once.

Replays are recorded in a second stream, `intake.dead.replayed` (one entry per replayed letter),
so a letter is replayed once and `intake dlq list --all` shows when. Replays take a broker-side
lock (an exclusive queue, released if the process dies), so two operators cannot replay the
same letter twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiormq.abc import DeliveredMessage

from ..errors import BrokerUnavailable, Rejected, Transient
from .consumer import Delivery
from .publish import BusPublish
from .topology import DEAD_ARGUMENTS, EXCHANGES, REASON_HEADER

DEAD_ID_HEADER = "x-intake-dead-id"
REPLAYED_FROM_HEADER = "x-intake-replayed-from"
STREAM_PREFETCH = 500
# A read ends once it has the messages the stream reported at its start and nothing more came
# for SETTLE_S. That count lags (RabbitMQ updates it about once a second), so a read that has
# fewer waits up to QUIET_MAX_S of silence before it ends.
SETTLE_S = 0.1
QUIET_MAX_S = 3.0


class DeadQueueOutdated(Rejected):
    """`intake.dead` is still the quorum queue of an older version: `intake dlq migrate`."""

    reason = "dead_queue_outdated"


class ReplayRunning(Transient):
    """Another replay (or migration) of dead letters holds the lock."""

    reason = "replay_running"


@dataclass
class DeadLetter:
    id: str
    reason: str
    error: str
    queue: str | None
    exchange: str | None
    routing_key: str | None
    dead_at: float | None
    body: bytes
    headers: dict[str, Any]
    offset: int | None = None  # position in the `intake.dead` stream
    replayed_at: float | None = None

    @classmethod
    def from_incoming(cls, incoming: AbstractIncomingMessage | Delivery,
                      offset: int | None = None) -> DeadLetter:
        headers = dict(incoming.headers or {})
        exchange = headers.get("x-intake-exchange")
        routing_key = headers.get("x-intake-routing-key")
        reason = headers.get(REASON_HEADER)
        queue = headers.get("x-intake-queue")
        deaths = headers.get("x-death") or []
        if reason is None and deaths:
            # Dead-lettered by the broker itself (delivery limit reached, e.g. a crash loop).
            first = deaths[0]
            reason = f"broker_{_text(first.get('reason', 'unknown'))}"
            queue = first.get("queue")
            exchange = first.get("exchange")
            keys = first.get("routing-keys") or [incoming.routing_key]
            routing_key = keys[0]
        elif reason is None and "x-first-death-reason" in headers:
            # The same without `x-death`, as a quorum queue's at-least-once dead-lettering
            # writes it (RabbitMQ 3.10); the routing key is the message's own.
            reason = f"broker_{_text(headers['x-first-death-reason'])}"
            queue = headers.get("x-first-death-queue")
            exchange = headers.get("x-first-death-exchange")
            routing_key = incoming.routing_key
        # The gateway's letters carry their id. A letter the broker dead-lettered has none, and
        # its message id repeats if it dies again after a replay: its stream offset is unique.
        dead_id = headers.get(DEAD_ID_HEADER) or (
            f"offset-{offset}" if offset is not None else incoming.message_id) or "unknown"
        dead_at = headers.get("x-intake-dead-at")
        if dead_at is None and deaths and deaths[0].get("time") is not None:
            dead_at = _timestamp(deaths[0]["time"])
        return cls(id=_text(dead_id), reason=_text(reason or "unknown"),
                   error=_text(headers.get("x-intake-error", "")), queue=_opt(queue),
                   exchange=_opt(exchange), routing_key=_opt(routing_key),
                   dead_at=None if dead_at is None else float(dead_at), body=incoming.body,
                   headers=headers, offset=offset)


class BusDeadLetters(BusPublish):
    """What `intake dlq list|show|replay|migrate` calls."""

    async def browse_dead(self, limit: int | None = 1000, *,
                          replayed: bool = False) -> list[DeadLetter]:
        """The dead letters in the order they died (the oldest `limit`); nothing changes.

        Letters already replayed are left out unless `replayed`; each has `replayed_at`.
        """
        letters: list[DeadLetter] = []
        # Without the ledger, no listing stops early: the letters are filtered afterwards.
        _, replays = await asyncio.gather(self._read_letters(letters.append), self._replays())
        kept = []
        for letter in letters:
            letter.replayed_at = replays.get(letter.id)
            if replayed or letter.replayed_at is None:
                kept.append(letter)
        return kept[:limit]

    async def find_dead(self, dead_id: str) -> DeadLetter | None:
        """The dead letter with this id (replayed or not), or None."""
        found: list[DeadLetter] = []

        def visit(letter: DeadLetter) -> bool:
            if letter.id == dead_id:
                found.append(letter)
            return not found

        await self._read_letters(visit)
        if not found:
            return None
        found[0].replayed_at = (await self._replays()).get(dead_id)
        return found[0]

    async def replay_dead(self, dead_ids: Iterable[str] | None = None,
                          bodies: dict[str, bytes] | None = None) -> list[str]:
        """Republish dead letters not replayed yet to where they came from; `None` = all.

        Each replay is recorded in the ledger after the broker confirmed the republish (a crash
        in between replays that letter again later: a duplicate, which the idempotency key
        absorbs). `bodies` replaces the body of a letter by its id: the repaired message (a
        field cut to size, a schema mistake fixed) goes back instead of the one that failed.
        The letters themselves stay in `intake.dead`.
        """
        wanted = set(dead_ids) if dead_ids is not None else None
        bodies = bodies or {}
        replayed: list[str] = []
        async with self._lock("dead.replaying"):
            await self._declare_stream("dead.replayed")
            pending = await self.browse_dead(None)
            for letter in pending:
                if wanted is not None and letter.id not in wanted:
                    continue
                exchange = self._logical_exchange(letter.exchange)
                if exchange is None:
                    self.log.warning("dead_letter_not_replayable", id=letter.id,
                                     exchange=letter.exchange)
                    continue
                headers = {k: v for k, v in letter.headers.items()
                           if not str(k).startswith("x-")}
                headers[REPLAYED_FROM_HEADER] = letter.id
                await self.publish(exchange, letter.routing_key or "",
                                   bodies.get(letter.id, letter.body), headers)
                await self._append("dead.replayed", {
                    "id": letter.id, "replayed_at": time.time(), "by": self.service,
                    "repaired": letter.id in bodies}, {DEAD_ID_HEADER: letter.id})
                replayed.append(letter.id)
        return replayed

    async def migrate_dead(self) -> int:
        """Move the letters of an older version's quorum `intake.dead` into the stream, once.

        The queue and the stream cannot share the name, so the letters go through a holding
        stream, `intake.dead.legacy`: (1) the old queue is unbound, so new dead letters come
        back to their senders, which keep them and retry; (2) each letter is copied to the
        holding stream, confirmed, then acked; (3) the empty queue is deleted and the stream
        declared; (4) the holding stream is copied into it and it is bound again. Every step
        can run again after a crash (copies skip the ids already there). Returns the number of
        letters taken from the old queue.
        """
        moved = 0
        holding = "dead.legacy"
        async with self._lock("dead.migrating"):
            if await self._is_outdated():
                await self._declare_stream(holding)
                async with self._channel() as channel:
                    old = await channel.get_queue(self.names("dead"), ensure=False)
                    await old.unbind(self.names("dead"), "#")
                moved = await self._move_queue_into(holding)
                async with self._channel() as channel:
                    # Empty now (unbound, every letter acked); a quorum queue has no if-empty
                    # delete, which is why the moving happens first.
                    await channel.queue_delete(self.names("dead"))
            if await self._exists(holding):
                await self._declare_stream("dead")
                have = await self._letter_ids("dead")
                letters: list[tuple[str, DeliveredMessage]] = []

                def keep(offset: int, message: DeliveredMessage) -> bool:
                    letters.append((DeadLetter.from_incoming(Delivery(message), offset).id,
                                    message))
                    return True

                await self._read(holding, keep)
                for dead_id, message in letters:
                    if dead_id not in have:
                        await self._copy(message, "dead")
                async with self._channel() as channel:
                    stream = await channel.get_queue(self.names("dead"), ensure=False)
                    await stream.bind(self.names("dead"), "#")
                    await channel.queue_delete(self.names(holding))
                self.log.info("dead_letters_migrated", moved=moved, letters=len(letters))
        return moved

    # -- reading streams --------------------------------------------------------------------

    async def _read_letters(self, visit: Callable[[DeadLetter], bool | None]) -> None:
        """Each letter in order; `visit` returning False (not None) stops the read."""
        if await self._is_outdated():
            raise DeadQueueOutdated(
                f"{self.names('dead')} is the quorum queue of an older version, which cannot be"
                " read without consuming it: run `intake dlq migrate` once")
        await self._read("dead", lambda offset, message: visit(
            DeadLetter.from_incoming(Delivery(message), offset)) is not False)

    async def _letter_ids(self, logical: str) -> set[str]:
        ids: set[str] = set()

        def visit(offset: int, message: DeliveredMessage) -> bool:
            ids.add(DeadLetter.from_incoming(Delivery(message), offset).id)
            return True

        await self._read(logical, visit)
        return ids

    async def _replays(self) -> dict[str, float]:
        """Replayed dead letter ids and when, from the ledger stream (declared by a replay)."""
        replays: dict[str, float] = {}
        if not await self._exists("dead.replayed"):
            return replays

        def visit(offset: int, message: DeliveredMessage) -> bool:
            headers = message.header.properties.headers or {}
            dead_id = headers.get(DEAD_ID_HEADER)
            if dead_id is not None:
                with contextlib.suppress(ValueError, TypeError):
                    replays.setdefault(_text(dead_id),
                                       float(_loads(message.body).get("replayed_at", 0)))
            return True

        await self._read("dead.replayed", visit)
        return replays

    async def _read(self, logical: str, visit: Callable[[int, DeliveredMessage], Any]) -> None:
        """Read the stream from its first message to its end, in order; `visit` False stops.

        A consumer with its own channel and prefetch, starting at offset `first`. Its acks
        only give the broker credit to send more: a stream removes nothing.
        """
        async with self._channel() as channel:
            underlay = await channel.get_underlay_channel()
            declared = await underlay.queue_declare(self.names(logical), passive=True)
            expected = int(declared.message_count or 0)
            await underlay.basic_qos(prefetch_count=STREAM_PREFETCH)
            inbox: asyncio.Queue[DeliveredMessage] = asyncio.Queue()

            async def on_message(message: DeliveredMessage) -> None:
                inbox.put_nowait(message)

            try:
                await underlay.basic_consume(self.names(logical), on_message,
                                             arguments={"x-stream-offset": "first"})
            except aiormq.exceptions.ChannelPreconditionFailed as exc:
                # In a cluster, a node whose stream member is still restarting (after the node
                # itself restarted) cannot serve a stream consumer: transient, not a bad request.
                if "replica" not in str(exc):
                    raise
                raise BrokerUnavailable(
                    f"{self.names(logical)}: the node this connection reached has no running "
                    f"replica of the stream yet; try again (another node may answer)") from exc
            seen = 0
            while True:
                try:
                    message = await asyncio.wait_for(
                        inbox.get(), SETTLE_S if seen >= expected else QUIET_MAX_S)
                except TimeoutError:
                    return
                seen += 1
                tag = message.delivery_tag
                if tag is not None:
                    await underlay.basic_ack(tag)
                headers = message.header.properties.headers or {}
                position = headers.get("x-stream-offset")
                offset = position if isinstance(position, int) else seen - 1
                if not visit(offset, message):
                    return

    # -- writing ----------------------------------------------------------------------------

    async def _append(self, logical: str, entry: dict[str, Any], headers: dict[str, Any],
                      ) -> None:
        """Append one confirmed entry to a stream of ours (by the default exchange)."""
        async with self._channel(confirms=True) as channel:
            await channel.default_exchange.publish(
                aio_pika.Message(orjson.dumps(entry), headers=headers,
                                 content_type="application/json",
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=self.names(logical), mandatory=True)

    async def _copy(self, message: DeliveredMessage | AbstractIncomingMessage, logical: str,
                    headers: dict[str, Any] | None = None) -> None:
        """Publish a letter unchanged (body, headers, properties) into a stream, confirmed."""
        if isinstance(message, DeliveredMessage):
            properties = message.header.properties
            body = message.body
            original = dict(properties.headers or {})
            message_id, content_type = properties.message_id, properties.content_type
        else:
            body, original = message.body, dict(message.headers or {})
            message_id, content_type = message.message_id, message.content_type
        original.pop("x-stream-offset", None)
        original.update(headers or {})
        async with self._channel(confirms=True) as channel:
            await channel.default_exchange.publish(
                aio_pika.Message(body, headers=original, message_id=message_id,
                                 content_type=content_type,
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=self.names(logical), mandatory=True)

    async def _move_queue_into(self, holding: str) -> int:
        """Take every letter from the old quorum `intake.dead` into `holding`, each once."""
        have = await self._letter_ids(holding)
        moved = 0
        async with self._channel() as channel:
            queue = await channel.get_queue(self.names("dead"), ensure=False)
            while True:
                while (incoming := await queue.get(no_ack=False, fail=False)) is not None:
                    # The id it had in the old queue, so it can still be shown and replayed.
                    letter = DeadLetter.from_incoming(incoming)
                    if letter.id not in have:
                        await self._copy(incoming, holding, {DEAD_ID_HEADER: letter.id})
                        have.add(letter.id)
                    await incoming.ack()
                    moved += 1
                declared = await channel.declare_queue(self.names("dead"), passive=True)
                if not declared.declaration_result.message_count:
                    return moved

    # -- declarations and locks -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _channel(self, confirms: bool = False) -> AsyncIterator[AbstractChannel]:
        assert self._connection is not None
        channel = await self._connection.channel(publisher_confirms=confirms)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await channel.close()

    async def _declare_stream(self, logical: str) -> None:
        async with self._channel() as channel:
            await channel.declare_queue(self.names(logical), durable=True,
                                        arguments=DEAD_ARGUMENTS)

    async def _is_outdated(self) -> bool:
        """True while `intake.dead` is an older version's quorum queue (not a stream)."""
        try:
            await self._declare_stream("dead")
        except aiormq.exceptions.ChannelPreconditionFailed:
            return True
        return False

    async def _exists(self, logical: str) -> bool:
        try:
            async with self._channel() as channel:
                await channel.declare_queue(self.names(logical), passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return False
        return True

    @contextlib.asynccontextmanager
    async def _lock(self, logical: str) -> AsyncIterator[None]:
        """Hold an exclusive queue: one holder per broker, released if this process dies."""
        async with self._channel() as channel:
            try:
                await channel.declare_queue(self.names(logical), exclusive=True,
                                            auto_delete=True)
            except aiormq.exceptions.ChannelLockedResource as exc:
                raise ReplayRunning(f"{self.names(logical)} is held by another process: a "
                                    "replay or migration of dead letters is running") from exc
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    await channel.queue_delete(self.names(logical))

    def _logical_exchange(self, name: str | None) -> str | None:
        for logical in EXCHANGES:
            if logical != "dead" and self.names(logical) == name:
                return logical
        return None


def _loads(body: bytes) -> dict[str, Any]:
    value = orjson.loads(body)
    return value if isinstance(value, dict) else {}


def _timestamp(value: Any) -> float | None:
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    with contextlib.suppress(TypeError, ValueError):
        return float(value)
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _opt(value: Any) -> str | None:
    return None if value is None else _text(value)
