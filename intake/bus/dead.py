"""Dead letters for ops: browse `intake.dead` and replay letters to where they came from."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from .consumer import Delivery
from .publish import BusPublish
from .topology import EXCHANGES, REASON_HEADER


class BusDeadLetters(BusPublish):
    """What `intake dlq list|show|replay` calls."""

    async def browse_dead(self, limit: int = 1000) -> list[DeadLetter]:
        """Read dead letters without removing them (they return to the queue on close)."""
        assert self._connection is not None
        channel = await self._connection.channel()
        letters: list[DeadLetter] = []
        try:
            queue = await channel.get_queue(self.names("dead"))
            while len(letters) < limit:
                incoming = await queue.get(no_ack=False, fail=False)
                if incoming is None:
                    break
                letters.append(DeadLetter.from_incoming(incoming))
        finally:
            await channel.close()
        return letters

    async def replay_dead(self, dead_ids: Iterable[str] | None = None,
                          bodies: dict[str, bytes] | None = None) -> list[str]:
        """Republish dead letters to where they came from, then remove them; `None` = all.

        `bodies` replaces the body of a dead letter by its id: the repaired message (a field
        cut to size, a schema mistake fixed) goes back instead of the one that failed.
        """
        wanted = set(dead_ids) if dead_ids is not None else None
        bodies = bodies or {}
        assert self._connection is not None
        channel = await self._connection.channel()
        replayed: list[str] = []
        try:
            queue = await channel.get_queue(self.names("dead"))
            while True:
                incoming = await queue.get(no_ack=False, fail=False)
                if incoming is None:
                    break
                letter = DeadLetter.from_incoming(incoming)
                if wanted is not None and letter.id not in wanted:
                    continue
                if letter.exchange is None:
                    continue
                exchange = self._logical_exchange(letter.exchange)
                if exchange is None:
                    continue
                headers = {k: v for k, v in (incoming.headers or {}).items()
                           if not str(k).startswith("x-")}
                headers["x-intake-replayed-from"] = letter.id
                await self.publish(exchange, letter.routing_key or "",
                                   bodies.get(letter.id, incoming.body), headers)
                await incoming.ack()
                replayed.append(letter.id)
                if wanted is not None and wanted <= set(replayed):
                    break
        finally:
            await channel.close()
        return replayed

    def _logical_exchange(self, name: str) -> str | None:
        for logical in EXCHANGES:
            if self.names(logical) == name:
                return logical
        return None


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

    @classmethod
    def from_incoming(cls, incoming: AbstractIncomingMessage | Delivery) -> DeadLetter:
        headers = dict(incoming.headers or {})
        exchange = headers.get("x-intake-exchange")
        routing_key = headers.get("x-intake-routing-key")
        reason = headers.get(REASON_HEADER)
        queue = headers.get("x-intake-queue")
        deaths = headers.get("x-death") or []
        if reason is None and deaths:
            # Dead-lettered by the broker itself (delivery limit reached, e.g. a crash loop).
            first = deaths[0]
            reason = f"broker_{first.get('reason', 'unknown')}"
            queue = first.get("queue")
            exchange = first.get("exchange")
            keys = first.get("routing-keys") or [incoming.routing_key]
            routing_key = keys[0]
        dead_id = headers.get("x-intake-dead-id") or incoming.message_id or (
            uuid.uuid5(uuid.NAMESPACE_OID, incoming.body.hex()[:4096]).hex)
        return cls(id=_text(dead_id), reason=_text(reason or "unknown"),
                   error=_text(headers.get("x-intake-error", "")), queue=_opt(queue),
                   exchange=_opt(exchange), routing_key=_opt(routing_key),
                   dead_at=headers.get("x-intake-dead-at"), body=incoming.body, headers=headers)



def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _opt(value: Any) -> str | None:
    return None if value is None else _text(value)
