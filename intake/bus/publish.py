"""Confirmed publishes on the bus's publish channel, and dead-lettering by the gateway."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Iterable
from typing import Any, cast

import aio_pika
import aiormq

from .. import amqp
from ..errors import BrokerRefused, BrokerUnavailable, Unroutable
from ..metrics import DEAD_LETTERED
from .connection import _AMQP_ERRORS
from .owned import BusOwned
from .topology import REASON_HEADER


class BusPublish(BusOwned):
    """Publishes persistently and returns once the broker confirmed (or raises)."""

    async def publish(self, exchange: str, routing_key: str, body: bytes,
                      headers: dict[str, Any] | None = None,
                      message_id: str | None = None, timeout: float | None = None,
                      mandatory: bool = True) -> None:
        """Publish persistently and return once the broker confirmed it (or raise).

        `mandatory` (every exchange but `events`): a message no queue takes comes back and
        raises `Unroutable` instead of vanishing.
        """
        await self._confirmed(self._send(exchange, routing_key, body, headers, message_id,
                                         timeout or self.settings.publish_timeout_s, mandatory))

    async def publish_many(self, exchange: str,
                           items: Iterable[tuple[str, bytes, dict[str, Any] | None]],
                           timeout: float | None = None, mandatory: bool = True) -> None:
        """Publish (routing key, body, headers) items in order; return once all are confirmed.

        One deadline for the lot instead of one timer per message, and no task per message:
        the frames are queued at once and the confirmations awaited together. The first
        failure raises (others may be confirmed: the caller's redelivery makes them
        duplicates, which are harmless): `Unroutable` when the broker returned one
        (`mandatory`, every exchange but `events`), `BrokerUnavailable` otherwise.
        """
        if not self.connected or self._publish_channel is None:
            raise BrokerUnavailable("not connected to the broker")
        target = self._exchanges[exchange]
        publish_channel = self._publish_channel
        batch = [(routing_key, body, _properties(headers))
                 for routing_key, body, headers in items]

        async def confirm_all() -> None:
            channel = cast(aiormq.Channel, await publish_channel.get_underlay_channel())
            waits = amqp.start_publishes(channel, target.name, batch, mandatory=mandatory)
            async with asyncio.timeout(timeout or self.settings.publish_timeout_s):
                await asyncio.gather(*waits)

        if batch:
            await self._confirmed(confirm_all())

    async def publish_to(self, exchange_name: str, routing_key: str, body: bytes,
                         headers: dict[str, Any] | None = None,
                         message_id: str | None = None, timeout: float | None = None,
                         mandatory: bool = True) -> None:
        """`publish` by the exchange's full name ("" is the default exchange, key = queue)."""
        await self._confirmed(self._send_named(
            exchange_name, routing_key, body, headers, message_id,
            timeout or self.settings.publish_timeout_s, mandatory))

    async def _send(self, exchange: str, routing_key: str, body: bytes,
                    headers: dict[str, Any] | None, message_id: str | None,
                    timeout: float | None, mandatory: bool = True) -> Any:
        if not self.connected:
            raise BrokerUnavailable("not connected to the broker")
        target = self._exchanges[exchange]
        return await self._send_named(target.name, routing_key, body, headers, message_id,
                                      timeout, mandatory)

    async def _send_named(self, exchange_name: str, routing_key: str, body: bytes,
                          headers: dict[str, Any] | None, message_id: str | None,
                          timeout: float | None, mandatory: bool = True) -> Any:
        if not self.connected or self._publish_channel is None:
            raise BrokerUnavailable("not connected to the broker")
        properties = _properties(headers, message_id)
        channel = cast(aiormq.Channel, await self._publish_channel.get_underlay_channel())
        # Not aio-pika's publish: it awaits each frame's drain under the channel's lock,
        # which serialises concurrent publishes; the confirm is what we wait for.
        return await amqp.publish(channel, body, exchange=exchange_name,
                                  routing_key=routing_key, properties=properties,
                                  mandatory=mandatory, timeout=timeout)

    @staticmethod
    async def _confirmed(sending: Awaitable[Any]) -> None:
        try:
            await sending
        except aiormq.exceptions.PublishError as exc:  # basic.return: no queue is bound
            raise Unroutable(f"no queue took the message: {exc}") from exc
        except aio_pika.exceptions.DeliveryError as exc:
            raise BrokerRefused(f"broker refused the message: {exc}") from exc
        except (TimeoutError, *_AMQP_ERRORS) as exc:
            raise BrokerUnavailable(f"publish not confirmed: {exc!r}") from exc

    async def dead_letter(self, body: bytes, reason: str, error: str, *, queue: str,
                          exchange: str | None = None, routing_key: str | None = None,
                          headers: dict[str, Any] | None = None) -> str:
        """Publish to `intake.dead` with the reason in headers; returns the dead letter's id."""
        dead_id = uuid.uuid4().hex
        all_headers = dict(headers or {})
        all_headers.update({
            REASON_HEADER: reason,
            "x-intake-error": error[:2000],
            "x-intake-dead-id": dead_id,
            "x-intake-queue": queue,
            "x-intake-service": self.service,
            "x-intake-dead-at": time.time(),
        })
        if exchange is not None:
            all_headers["x-intake-exchange"] = exchange
            all_headers["x-intake-routing-key"] = routing_key or ""
        await self.publish("dead", reason, body, all_headers, message_id=dead_id)
        DEAD_LETTERED.labels(self.service, reason).inc()
        self.log.warning("message_dead_lettered", reason=reason, error=error[:500], queue=queue)
        return dead_id


def _properties(headers: dict[str, Any] | None,
                message_id: str | None = None) -> aiormq.spec.Basic.Properties:
    return aiormq.spec.Basic.Properties(headers=headers or {}, message_id=message_id,
                                        content_type="application/json",
                                        delivery_mode=2)  # persistent
