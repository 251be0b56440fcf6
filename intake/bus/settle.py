"""Settling deliveries: acks (deferred multiple acks), retries, dead letters and requeues.

A message is settled once its handling is over: acked when the handler returned, dead-lettered
at once when it raised `Rejected`, given back (nack with requeue) when the broker went away or
the consumer stops during an outage, and otherwise retried.

Retries are counted by the gateway, not read from `x-delivery-count` (which classic queues never
set, and whose counting changed between RabbitMQ versions): a transient failure republishes a
copy of the message to the same queue through the default exchange with `x-intake-attempt`
raised by one, confirmed, and only then acks the one delivered. After `INTAKE_DELIVERY_LIMIT`
attempts the message is dead-lettered `retries_exhausted`. A quorum queue's own
`x-delivery-limit` stays above that, as a safety net for crash loops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ..errors import BrokerUnavailable, Ignored, Rejected, Unroutable, Unsupported
from ..metrics import ERRORS, IGNORED
from ..settings import IntakeSettings
from ..supervisor import Supervisor
from .publish import BusPublish

if TYPE_CHECKING:  # the consumer part builds on this one; only its types are needed here
    from .consumer import Delivery, _ConsumerSpec

# Batches' acks go out together, one `multiple` ack per this interval (see Bus._ack_later).
ACK_DELAY_S = 0.005
# Before attempt n+1 of a failed message: RETRY_FIRST_DELAY_S * 2**n, at most RETRY_MAX_DELAY_S.
RETRY_FIRST_DELAY_S = 0.1
RETRY_MAX_DELAY_S = 5.0
ATTEMPT_HEADER = "x-intake-attempt"
# Where a retried copy first came from (the copy itself arrives through the default exchange).
FIRST_EXCHANGE_HEADER = "x-intake-first-exchange"
FIRST_ROUTING_KEY_HEADER = "x-intake-first-routing-key"
# Set by the broker; not carried over to a retried copy.
_BROKER_HEADERS = ("x-death", "x-delivery-count", "x-first-death-exchange",
                   "x-first-death-queue", "x-first-death-reason")


class BusSettle(BusPublish):
    """Acks, dead-letters, retries or requeues each delivery once its handling is over."""

    def __init__(self, settings: IntakeSettings, service: str, *,
                 write_window_s: float = 0.0, supervisor: Supervisor | None = None) -> None:
        super().__init__(settings, service, write_window_s=write_window_s,
                         supervisor=supervisor)
        self._tasks: set[asyncio.Task[None]] = set()  # deferred acks on their way out

    async def _ack_batch(self, spec: _ConsumerSpec[Any],
                         batch: list[Delivery]) -> None:
        """One `multiple` ack for this and the next batches when that is safe, else one each.

        Safe means every earlier delivery on the channel is settled already: batches are
        prefixes of the buffer and are settled in order, so only a message still being
        dead-lettered on the side (schema-invalid) could be an unsettled earlier one.
        """
        last = batch[-1]
        if spec.settling == 0 and all(incoming.channel is last.channel for incoming in batch):
            self._ack_later(spec, last, len(batch))
            return
        for incoming in batch:
            await self._settle(spec, incoming, None)

    def _ack_later(self, spec: _ConsumerSpec[Any], last: Delivery, count: int) -> None:
        """Ack `count` messages up to `last` within ACK_DELAY_S, with whatever settles meanwhile.

        On a quorum queue every ack is a command in the broker's replicated log. At moderate
        rates a batch is one to three messages, so acking each batch at once cost the broker
        (and us) a log write, a socket write and a wake-up per message or two. The messages are
        done already (forwarded or committed), so waiting adds nothing to their latency; a
        crash in between only has the broker deliver them again, which is harmless. In-flight
        counts drop when the ack is out, so a graceful stop waits for it.
        """
        pending = spec.ack_pending
        if pending is not None and pending.channel is not last.channel:
            self._flush_ack(spec)
        spec.ack_pending = last
        spec.ack_count += count
        if spec.stopped:  # a stop waits for nothing it need not
            self._flush_ack(spec)
        elif spec.ack_timer is None:
            spec.ack_timer = asyncio.get_running_loop().call_later(
                ACK_DELAY_S, self._flush_ack, spec)

    def _flush_ack(self, spec: _ConsumerSpec[Any]) -> None:
        if spec.ack_timer is not None:
            spec.ack_timer.cancel()
            spec.ack_timer = None
        last, count = spec.ack_pending, spec.ack_count
        spec.ack_pending, spec.ack_count = None, 0
        if last is None:
            return

        async def ack() -> None:
            try:
                await last.ack(multiple=True)
            except Exception:  # the channel is gone: the broker redelivers them all
                pass
            spec.inflight -= count
            if spec.inflight == 0:
                spec.idle.set()

        self._tasks.add(task := asyncio.ensure_future(ack()))
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, spec: _ConsumerSpec[Any], incoming: Delivery,
                      outcome: BaseException | None, *, requeue: bool = False) -> None:
        """Ack, dead-letter or send back one message after its handling; then count it done."""
        try:
            if requeue:
                await _quietly(incoming.nack(requeue=True))
            elif outcome is None:
                await _quietly(incoming.ack())
            else:
                await self._settle_failure(spec, incoming, outcome)
        finally:
            spec.inflight -= 1
            if spec.inflight == 0:
                spec.idle.set()

    async def _settle_failure(self, spec: _ConsumerSpec[Any], incoming: Delivery,
                              exc: BaseException) -> None:
        headers = incoming.headers or {}
        first_exchange = headers.get(FIRST_EXCHANGE_HEADER)
        origin = {"queue": self.names(spec.queue),
                  "exchange": incoming.exchange if first_exchange is None
                  else _text(first_exchange),
                  "routing_key": _text(headers.get(FIRST_ROUTING_KEY_HEADER,
                                                   incoming.routing_key or "")),
                  "headers": {k: v for k, v in headers.items() if not str(k).startswith("x-")}}
        reason = getattr(exc, "reason", "handler_failed")
        if isinstance(exc, Ignored):  # dropped on purpose: acked and counted, not an error
            # The delivery's channel is not parsed here: the consuming service names it.
            IGNORED.labels(self.service, "", reason).inc()
            await _quietly(incoming.ack())
            return
        ERRORS.labels(self.service, reason).inc()
        # Unsupported: kept in intake.dead with its reason, to replay once it is supported.
        if isinstance(exc, (Rejected, Unsupported)):
            await self._dead_letter_or_requeue(incoming, reason, str(exc), origin)
            return
        if self._broker_gone(exc, incoming):
            await self._wait_for_broker(incoming)
            await _quietly(incoming.nack(requeue=True))  # not an attempt of the message's
            return
        if getattr(exc, "hold", False):  # stopping during an outage: not the message's fault
            await _quietly(incoming.nack(requeue=True))
            return
        attempt = attempt_of(headers)
        if attempt >= self.settings.delivery_limit:
            await self._dead_letter_or_requeue(
                incoming, "retries_exhausted", f"{reason}: {exc!r}", origin)
            return
        self.log.warning("message_retried", reason=reason, error=repr(exc)[:500],
                         attempt=attempt)
        # Back off before the next attempt so an outage does not become a hot loop.
        await asyncio.sleep(min(RETRY_FIRST_DELAY_S * 2 ** attempt, RETRY_MAX_DELAY_S))
        if incoming.channel.is_closed:
            return  # the broker delivers it again, this attempt not counted
        try:
            await self._publish_retry(spec, incoming, attempt + 1, origin)
        except BrokerUnavailable:
            # The broker's own count (a quorum queue's delivery limit) is the safety net here.
            await _quietly(incoming.nack(requeue=True))
            return
        await _quietly(incoming.ack())

    async def _publish_retry(self, spec: _ConsumerSpec[Any], incoming: Delivery, attempt: int,
                             origin: dict[str, Any]) -> None:
        """A copy of the message to the back of its own queue, with its attempt number."""
        headers = {k: v for k, v in (incoming.headers or {}).items()
                   if k not in _BROKER_HEADERS}
        headers[ATTEMPT_HEADER] = attempt
        headers.setdefault(FIRST_EXCHANGE_HEADER, origin["exchange"] or "")
        headers.setdefault(FIRST_ROUTING_KEY_HEADER, origin["routing_key"])
        await self.publish_to("", self.names(spec.queue), incoming.body, headers,
                              message_id=incoming.message_id)

    def _broker_gone(self, exc: BaseException, incoming: Delivery) -> bool:
        """The failure is the broker's (channel or connection gone), not the message's."""
        if incoming.channel.is_closed:
            return True
        return isinstance(exc, BrokerUnavailable) and not isinstance(exc, Unroutable)

    async def _wait_for_broker(self, incoming: Delivery) -> None:
        # With the consumer's channel still open (only the publish channel went), a requeue at
        # once would come straight back and fail again, each time spending the quorum queue's
        # delivery count: wait (bounded) until the bus can publish again.
        if not incoming.channel.is_closed and not self.connected:
            await self.wait_connected(self.settings.publish_timeout_s)

    async def _dead_letter_or_requeue(self, incoming: Delivery, reason: str,
                                      error: str, origin: dict[str, Any]) -> None:
        try:
            await self.dead_letter(incoming.body, reason, error, queue=origin["queue"],
                                   exchange=origin["exchange"],
                                   routing_key=origin["routing_key"],
                                   headers=origin["headers"])
        except BrokerUnavailable:
            await _quietly(incoming.nack(requeue=True))
            return
        await _quietly(incoming.ack())


def attempt_of(headers: dict[str, Any]) -> int:
    """Which attempt a delivery is: 1 for the first, as counted in `x-intake-attempt`."""
    try:
        return max(1, int(headers.get(ATTEMPT_HEADER, 1)))
    except (TypeError, ValueError):
        return 1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _quietly(awaitable: Awaitable[Any]) -> None:
    # The channel may be gone (broker restart); the broker then redelivers on its own.
    with contextlib.suppress(Exception):
        await awaitable
