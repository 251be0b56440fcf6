"""The bus's connection: the first reachable node, kept under the supervisor until closed.

The connection is the supervised component `broker`: when it drops, the supervisor opens a new
one (closing the old one first) with backoff. When only the publish channel is lost (a publish
to a missing exchange, a channel the broker closed) it is reopened on the same connection and
the topology declared again, without touching the consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue

from .. import amqp
from ..errors import BrokerUnavailable
from ..logging import get_logger
from ..metrics import BROKER_CONNECTED
from ..settings import IntakeSettings
from ..supervisor import Ready, Supervisor
from . import topology
from .topology import Names

_AMQP_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, OSError, RuntimeError)
BROKER_COMPONENT = "broker"
# INTAKE_BUS_DECLARE=false: how often exchanges and queues found missing are looked for again.
RECHECK_TOPOLOGY_S = 5.0


def nodes_in_turn(urls: list[str], rng: random.Random | None = None) -> list[str]:
    """The cluster's nodes in their listed order, starting at a random one.

    Every service starting at the first node would put every connection (and every consumer)
    on one node; a random start spreads them, and each connect still tries every node once.
    """
    if len(urls) < 2:
        return list(urls)
    start = (rng or random).randrange(len(urls))
    return urls[start:] + urls[:start]


class ConnectionLost(ConnectionError):
    """The broker connection closed under the bus (the supervisor opens a new one)."""


class BusConnection:
    """One connection per process, its confirmed publish channel, and the topology on it."""

    def __init__(self, settings: IntakeSettings, service: str, *,
                 write_window_s: float = 0.0, supervisor: Supervisor | None = None) -> None:
        self.settings = settings
        self.service = service
        self.write_window_s = write_window_s  # see amqp.set_write_window
        self.names = Names(settings.bus_prefix)
        self.log = get_logger(service=service, component="bus")
        # A service passes its own supervisor so that /readyz sees every component in one place.
        self.supervisor = supervisor or Supervisor(service)
        self._connection: AbstractConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._connected = asyncio.Event()
        self._closing = False
        self._started = False
        self._changed = asyncio.Event()  # the connection or the publish channel closed
        # INTAKE_BUS_DECLARE=false: the topology found missing at the last connect.
        self.missing_topology: list[str] = []
        self.on_connected: list[Callable[[], Awaitable[None]]] = []

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background and keep reconnecting until `close`."""
        if not self._started:
            self._started = True
            # Explicit, not a side effect of `import intake`: the connections made from now on
            # get the coalesced writes and the lean publish's bigger write queue.
            if not amqp.install():
                self.log.warning("amqp_writes_not_coalesced", hint="aiormq is not the pinned "
                                 "version: one socket write per frame, slower under load")
            self.supervisor.start(BROKER_COMPONENT, self._run_connection)

    async def wait_connected(self, timeout: float | None = None) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self.connected

    async def connect(self, timeout: float = 30.0) -> None:
        """Start and wait for the first connection (for tools and tests)."""
        self.start()
        if not await self.wait_connected(timeout):
            raise BrokerUnavailable(f"no broker reachable at {self._safe_urls()}")

    def problems(self) -> dict[str, str]:
        """This bus's components that are not up (broker, consumers), name -> reason; and,
        with `INTAKE_BUS_DECLARE=false`, the exchanges and queues that do not exist."""
        found = {name: reason for name, reason in self.supervisor.problems().items()
                 if name in self._component_names()}
        if self.missing_topology:
            found["topology"] = ("missing (INTAKE_BUS_DECLARE=false declares nothing): "
                                 + ", ".join(self.missing_topology))
        return found

    def _component_names(self) -> set[str]:
        return {BROKER_COMPONENT} if self._started else set()

    def _safe_urls(self) -> str:
        return ", ".join(url.split("@")[-1] for url in self.settings.amqp_urls)

    async def _open(self) -> AbstractConnection:
        last: BaseException | None = None
        for url in nodes_in_turn(self.settings.amqp_urls):
            try:
                return await asyncio.wait_for(
                    aio_pika.connect(url, client_properties={"connection_name": self.service}),
                    timeout=10)
            except (*_AMQP_ERRORS, TimeoutError) as exc:
                last = exc
        raise BrokerUnavailable(f"no broker reachable at {self._safe_urls()}: {last!r}")

    async def _run_connection(self, ready: Ready) -> None:
        """The `broker` component: connect, declare, serve until the connection closes."""
        old, self._connection = self._connection, None
        if old is not None and not old.is_closed:  # never two connections at once
            with contextlib.suppress(Exception):
                await old.close()
        connection = await self._open()
        changed = self._changed = asyncio.Event()

        def lost(*_: Any) -> None:
            self._connected.clear()
            changed.set()

        connection.close_callbacks.add(lost)
        if self.write_window_s:
            amqp.set_write_window(connection, self.write_window_s)
        self._connection = connection
        try:
            await self._open_publish_channel(connection)
            await self._on_connect()
            for callback in self.on_connected:
                await callback()
            self._connected.set()
            BROKER_CONNECTED.labels(self.service).set(1)
            ready()
            while True:
                if self.missing_topology:  # INTAKE_BUS_DECLARE=false: look again, until there
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), RECHECK_TOPOLOGY_S)
                    if not changed.is_set():
                        await self._recheck_topology(connection)
                        continue
                await changed.wait()
                changed.clear()
                if connection.is_closed:
                    raise ConnectionLost("the broker connection closed")
                if self._publish_channel is None or self._publish_channel.is_closed:
                    self.log.warning("publish_channel_lost")
                    self._connected.clear()
                    await self._open_publish_channel(connection)
                    self._connected.set()
                    self.log.info("publish_channel_reopened")
        finally:
            self._connected.clear()
            BROKER_CONNECTED.labels(self.service).set(0)
            with contextlib.suppress(Exception):
                await asyncio.shield(connection.close())

    async def _open_publish_channel(self, connection: AbstractConnection) -> None:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        changed = self._changed
        channel.close_callbacks.add(lambda *_: changed.set())
        self._publish_channel = channel
        await self._declare(channel)

    async def _recheck_topology(self, connection: AbstractConnection) -> None:
        still = []
        for item in self.missing_topology:
            kind, name = item.split(" ", 1)
            if not await topology.exists(connection, name, kind):
                still.append(item)
        if still != self.missing_topology:
            self.log.info("topology_found", now_missing=still)
        self.missing_topology = still

    async def _on_connect(self) -> None:
        """Hook for the parts built on the connection (a connector's own topology)."""

    async def _declare(self, channel: AbstractChannel) -> None:
        assert self._connection is not None
        if not self.settings.bus_declare:
            self._exchanges, self.missing_topology = await topology.check_core(
                self._connection, channel, self.names)
            if self.missing_topology:
                self.log.warning("topology_missing", missing=self.missing_topology,
                                 hint="INTAKE_BUS_DECLARE=false: import "
                                      "deploy/rabbitmq/definitions.json")
            return
        self._exchanges = await topology.declare_core(
            self._connection, channel, self.names, self.queue_arguments(), self.log)

    def queue_arguments(self) -> dict[str, Any]:
        return topology.queue_arguments(self.names, self.settings.delivery_limit)

    async def _declare_queue(self, logical: str, channel: AbstractChannel | None = None,
                             ) -> AbstractQueue:
        """Declare a consumer's quorum queue; if it exists with other arguments, use it.

        With `INTAKE_BUS_DECLARE=false` only check that it exists: a missing one raises
        `BrokerUnavailable` naming it (the consumer's supervisor checks again later).
        """
        assert self._connection is not None
        channel = channel or self._require_channel()
        if not self.settings.bus_declare:
            name = self.names(logical)
            if not await topology.exists(self._connection, name, "queue"):
                raise BrokerUnavailable(f"queue {name} does not exist (INTAKE_BUS_DECLARE=false "
                                        "declares nothing: import the definitions)")
            return await channel.get_queue(name, ensure=False)
        return await topology.declare_queue(self._connection, channel, self.names(logical),
                                            self.queue_arguments(), self.log)

    def _require_channel(self) -> AbstractChannel:
        if not self.connected and self._publish_channel is None:
            raise BrokerUnavailable("not connected to the broker")
        assert self._publish_channel is not None
        return self._publish_channel

    async def close(self) -> None:
        """Close the connection and stop reconnecting."""
        self._closing = True
        if self._started:
            await self.supervisor.remove(BROKER_COMPONENT)
            self._started = False
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connected.clear()
        BROKER_CONNECTED.labels(self.service).set(0)
