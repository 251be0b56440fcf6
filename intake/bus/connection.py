"""The bus's connection: connect to the first reachable node, reconnect until closed."""

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
from . import topology
from .topology import Names

_AMQP_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, OSError, RuntimeError)
COALESCED_WRITES = amqp.install()


class BusConnection:
    """One connection per process, its confirmed publish channel, and the topology on it."""

    def __init__(self, settings: IntakeSettings, service: str, *,
                 write_window_s: float = 0.0) -> None:
        self.settings = settings
        self.service = service
        self.write_window_s = write_window_s  # see amqp.set_write_window
        self.names = Names(settings.bus_prefix)
        self.log = get_logger(service=service, component="bus")
        self._connection: AbstractConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._connected = asyncio.Event()
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self.on_connected: list[Callable[[], Awaitable[None]]] = []
        if not COALESCED_WRITES:
            self.log.warning("amqp_writes_not_coalesced", hint="aiormq is not the pinned "
                             "version: one socket write per frame, slower under load")

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background and keep reconnecting until `close`."""
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(self._supervise(), name=f"bus-{self.service}")

    async def wait_connected(self, timeout: float | None = None) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self.connected

    async def connect(self, timeout: float = 30.0) -> None:
        """Start and wait for the first connection (for tools and tests)."""
        self.start()
        if not await self.wait_connected(timeout):
            raise BrokerUnavailable(f"no broker reachable at {self._safe_urls()}")

    def _safe_urls(self) -> str:
        return ", ".join(url.split("@")[-1] for url in self.settings.amqp_urls)

    async def _supervise(self) -> None:
        delay = 0.2
        was_up = False
        reported_down = False
        while not self._closing:
            try:
                await self._connect_once()
            except (*_AMQP_ERRORS, TimeoutError) as exc:
                if not reported_down:
                    self.log.warning("broker_unreachable", urls=self._safe_urls(), error=str(exc))
                    reported_down = True
                await asyncio.sleep(delay + random.random() * delay / 2)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.2
            if was_up or reported_down:
                self.log.info("broker_reconnected", urls=self._safe_urls())
            was_up, reported_down = True, False
            await self._lost.wait()
            self._connected.clear()
            BROKER_CONNECTED.labels(self.service).set(0)
            if not self._closing:
                self.log.warning("broker_connection_lost")
                reported_down = True

    async def _connect_once(self) -> None:
        last: BaseException | None = None
        for url in self.settings.amqp_urls:
            try:
                connection = await asyncio.wait_for(
                    aio_pika.connect(url, client_properties={"connection_name": self.service}),
                    timeout=10)
                break
            except (*_AMQP_ERRORS, TimeoutError) as exc:
                last = exc
        else:
            raise last or ConnectionError("no AMQP URL configured")
        self._lost = asyncio.Event()
        connection.close_callbacks.add(lambda *_: self._lost.set())
        if self.write_window_s:
            amqp.set_write_window(connection, self.write_window_s)
        try:
            self._connection = connection
            self._publish_channel = await connection.channel(
                publisher_confirms=True, on_return_raises=True)
            self._publish_channel.close_callbacks.add(lambda *_: self._lost.set())
            await self._declare(self._publish_channel)
            await self._on_connect()
            for callback in self.on_connected:
                await callback()
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        self._connected.set()
        BROKER_CONNECTED.labels(self.service).set(1)

    async def _on_connect(self) -> None:
        """Hook for the parts built on the connection (the consumers start here)."""

    async def _declare(self, channel: AbstractChannel) -> None:
        assert self._connection is not None
        self._exchanges = await topology.declare_core(
            self._connection, channel, self.names, self.queue_arguments(), self.log)

    def queue_arguments(self) -> dict[str, Any]:
        return topology.queue_arguments(self.names, self.settings.delivery_limit)

    async def declare_queue(self, logical: str, channel: AbstractChannel | None = None,
                            ) -> AbstractQueue:
        """Declare a quorum queue; if it exists with other arguments, use it as it is."""
        assert self._connection is not None
        channel = channel or self._require_channel()
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
        self._lost.set()
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connected.clear()
        BROKER_CONNECTED.labels(self.service).set(0)
