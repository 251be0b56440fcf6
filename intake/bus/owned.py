"""Exchanges and queues a connector declares under its own name (`intake.<channel>.*`).

For what the core topology does not carry: a fan-out between the replicas of the SDK's live
chat (`bus.declare_exchange("sdk.live", "fanout")`, then
`bus.declare_queue("sdk.live.<replica>", bindings=[("sdk.live", "")], transient=True)`).
Declarations are remembered and made again on every reconnect and whenever a consumer of the
queue starts again; a name outside the bus's own `<service>.` prefix is refused, so a connector
cannot touch the core topology or another channel's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

from ..settings import IntakeSettings
from ..supervisor import Supervisor
from .connection import BusConnection
from .topology import CORE_QUEUES, EXCHANGES

ExchangeKind = Literal["topic", "fanout", "direct", "headers"]


@dataclass(frozen=True)
class OwnedQueue:
    logical: str
    bindings: tuple[tuple[str, str], ...]  # (logical exchange, binding key)
    transient: bool  # classic, auto-deleted with its last consumer (a replica's own queue)


class BusOwned(BusConnection):
    """`declare_exchange` and `declare_queue` for names under the service's own prefix."""

    def __init__(self, settings: IntakeSettings, service: str, *,
                 write_window_s: float = 0.0, supervisor: Supervisor | None = None) -> None:
        super().__init__(settings, service, write_window_s=write_window_s,
                         supervisor=supervisor)
        self._owned_exchanges: dict[str, ExchangeKind] = {}
        self._owned_queues: dict[str, OwnedQueue] = {}

    async def declare_exchange(self, logical: str, kind: ExchangeKind = "topic") -> None:
        """Declare `intake.<logical>` (durable), now if connected and on every reconnect.

        `logical` must start with this bus's service (channel) name and a dot. Once declared,
        `publish(logical, …)` publishes to it.
        """
        self._check_owned(logical)
        self._owned_exchanges[logical] = kind
        if self.connected:
            await self._declare_owned_exchange(self._require_channel(), logical, kind)

    async def declare_queue(self, logical: str, *,
                            bindings: Iterable[tuple[str, str]] = (),
                            transient: bool = False) -> None:
        """Declare `intake.<logical>` with its bindings (logical exchange, key).

        A durable quorum queue with the bus's arguments by default; `transient` makes a classic
        queue deleted with its last consumer (a replica's own queue for a fan-out). Bindings
        may name core exchanges (`outbound`) or the service's own.
        """
        self._check_owned(logical)
        queue = OwnedQueue(logical, tuple(bindings), transient)
        for exchange, _ in queue.bindings:
            if exchange not in EXCHANGES and exchange not in self._owned_exchanges:
                raise ValueError(f"binding to an undeclared exchange {self.names(exchange)!r}")
        self._owned_queues[logical] = queue
        if self.connected:
            await self._declare_queue(logical)

    def _check_owned(self, logical: str) -> None:
        owner = f"{self.service}."
        if (not logical.startswith(owner) or logical == owner or logical in EXCHANGES
                or logical in CORE_QUEUES or logical == "dead"):
            raise ValueError(
                f"{self.names(logical)!r} is outside {self.names(owner + '*')!r}: a connector "
                "declares exchanges and queues only under its own name")

    async def _declare(self, channel: AbstractChannel) -> None:
        await super()._declare(channel)
        for logical, kind in self._owned_exchanges.items():
            await self._declare_owned_exchange(channel, logical, kind)
        for logical in self._owned_queues:
            await self._declare_queue(logical, channel)

    async def _declare_owned_exchange(self, channel: AbstractChannel, logical: str,
                                      kind: ExchangeKind) -> None:
        self._exchanges[logical] = await channel.declare_exchange(
            self.names(logical), aio_pika.ExchangeType(kind), durable=True)

    async def _declare_queue(self, logical: str, channel: AbstractChannel | None = None,
                             ) -> AbstractQueue:
        owned = self._owned_queues.get(logical)
        if owned is None:
            return await super()._declare_queue(logical, channel)
        channel = channel or self._require_channel()
        if owned.transient:
            queue = await channel.declare_queue(self.names(logical), durable=False,
                                                auto_delete=True)
        else:
            queue = await super()._declare_queue(logical, channel)
        for exchange, key in owned.bindings:
            if exchange in self._owned_exchanges:  # it may be gone too (deleted by hand)
                await self._declare_owned_exchange(channel, exchange,
                                                   self._owned_exchanges[exchange])
            await queue.bind(self.names(exchange), key)
        return queue
