"""Consuming: deliveries, consumer specs, one-by-one and batched handling.

A handler is an async function that takes a model and returns, or raises a kernel error:
`Rejected` dead-letters at once, anything else is retried up to the delivery limit. How each
delivery is then acked, retried, dead-lettered or given back is `settle`'s part.

Each consumer is the supervised component `consumer:<queue>`: it watches its AMQP channel and
the broker's `basic.cancel` (queue deleted, channel closed by `consumer_timeout` or a
precondition failure) and, when either happens, the supervisor declares its queue and binding
again on a new channel and consumes anew, without a process restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import aiormq
from aio_pika.abc import AbstractChannel
from pydantic import BaseModel, ValidationError

from ..errors import Rejected, Unroutable
from ..logging import bind_message
from ..metrics import HANDLER_SECONDS
from ..settings import IntakeSettings
from ..supervisor import Ready, Supervisor
from .settle import ACK_DELAY_S, ATTEMPT_HEADER, BusSettle, attempt_of
from .topology import CORE_QUEUES

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[M], Awaitable[None]]
BatchHandler = Callable[[list[M]], Awaitable[None]]

HOLD_FIRST_RETRY_S = 0.2
# A queue being declared again (its consumer recovering from `delete_queue`) leaves the handlers
# that publish to it unroutable for a moment: they hold their message this long before the
# usual attempts and dead letter take over (a queue that never comes back is a misconfiguration).
UNROUTABLE_HOLD_S = 60.0
# With `pipeline` > 1, a new batch overlaps the one under way only once this many wait.
PIPELINE_MIN = 16
# ACK_DELAY_S, ATTEMPT_HEADER and attempt_of live in `settle`; still importable from here.
__all__ = ["ACK_DELAY_S", "ATTEMPT_HEADER", "HOLD_FIRST_RETRY_S", "PIPELINE_MIN", "BatchHandler",
           "BusConsumers", "ConsumerLost", "Delivery", "Handler", "attempt_of"]


class ConsumerLost(ConnectionError):
    """The broker cancelled a consumer or closed its channel (the supervisor starts it again)."""


class Delivery:
    """One delivered message, straight from aiormq.

    aio-pika would wrap each delivery in an IncomingMessage (and a second task); the bus needs
    only the body, a few properties and ack/nack, so it consumes from aiormq directly.
    """

    __slots__ = ("_message", "body", "channel", "delivery_tag")

    def __init__(self, message: aiormq.abc.DeliveredMessage) -> None:
        self._message = message
        self.body: bytes = message.body
        self.channel: aiormq.abc.AbstractChannel = message.channel
        self.delivery_tag: int = message.delivery.delivery_tag  # type: ignore[union-attr,assignment]

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self._message.header.properties.headers or {})

    @property
    def exchange(self) -> str | None:
        return self._message.exchange

    @property
    def routing_key(self) -> str | None:
        return self._message.routing_key

    @property
    def message_id(self) -> str | None:
        return self._message.header.properties.message_id

    async def ack(self, multiple: bool = False) -> None:
        await self.channel.basic_ack(self.delivery_tag, multiple=multiple, wait=False)

    async def nack(self, requeue: bool = True) -> None:
        await self.channel.basic_nack(self.delivery_tag, requeue=requeue, wait=False)


@dataclass
class _ConsumerSpec(Generic[M]):
    queue: str
    handler: Callable[..., Awaitable[None]]  # Handler[M], or BatchHandler[M] when batch > 1
    model: type[M]
    prefetch: int
    binding: tuple[str, str] | None
    tag: str | None = None
    channel: AbstractChannel | None = None
    underlay: aiormq.abc.AbstractChannel | None = None
    batch: int = 1
    max_wait_s: float = 0.0
    pipeline: int = 1  # batches handled at once (settled in order)
    inflight: int = 0
    settling: int = 0  # messages being settled outside the batch order (dead letters)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: bool = False
    buffer: list[tuple[Delivery, M]] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    crowded: asyncio.Event = field(default_factory=asyncio.Event)  # PIPELINE_MIN are waiting
    flusher: asyncio.Task[None] | None = None
    # A multiple ack waiting to go out (see Bus._ack_later): its last delivery and its count.
    ack_pending: Delivery | None = None
    ack_count: int = 0
    ack_timer: asyncio.TimerHandle | None = None
    component: str = ""  # its name under the supervisor: consumer:<queue>
    holding: int = 0  # handlers holding a message during an outage (see Bus._call)


class BusConsumers(BusSettle):
    """Consumers, each on a channel of its own, started again on every connect."""

    def __init__(self, settings: IntakeSettings, service: str, *,
                 write_window_s: float = 0.0, supervisor: Supervisor | None = None) -> None:
        super().__init__(settings, service, write_window_s=write_window_s,
                         supervisor=supervisor)
        self._consumers: list[_ConsumerSpec[Any]] = []

    def _component_names(self) -> set[str]:
        return super()._component_names() | {
            spec.component for spec in self._consumers if not spec.stopped}

    async def close(self) -> None:
        """Stop consumers (finishing in-flight work), then close the connection."""
        await self.stop_consumers()
        await super().close()

    def consume(self, queue: str, handler: Handler[M], model: type[M], *,
                prefetch: int | None = None,
                binding: tuple[str, str] | None = None) -> _ConsumerSpec[M]:
        """Register a consumer; it runs whenever the bus is connected.

        `binding` (exchange, key) declares and binds a queue beyond the core topology,
        e.g. a connector's `outbound.<channel>` queue.
        """
        return self._register(_ConsumerSpec(queue, handler, model,
                                            prefetch or self.settings.prefetch, binding))

    def consume_batches(self, queue: str, handler: BatchHandler[M], model: type[M], *,
                        max_batch: int = 100, max_wait_s: float = 0.002,
                        prefetch: int | None = None, pipeline: int = 1,
                        binding: tuple[str, str] | None = None) -> _ConsumerSpec[M]:
        """Like `consume`, but the handler takes a list (one transaction for many messages).

        Each message is acked only after the handler returned for its batch. When a batch
        fails, its messages are handled again one by one, so a poison message is dead-lettered
        alone and the others go through.

        `pipeline` > 1 lets the next batches start while earlier ones wait (for confirms, say);
        handlers start in arrival order and batches are still settled in order. Only for
        handlers whose batches may overlap (the router's; not a database writer's).
        """
        spec: _ConsumerSpec[M] = _ConsumerSpec(
            queue, handler, model, prefetch or max(self.settings.prefetch, 2 * max_batch),
            binding, batch=max(1, max_batch), max_wait_s=max_wait_s,
            pipeline=max(1, pipeline))
        if spec.batch > 1:
            spec.flusher = asyncio.create_task(self._flush_forever(spec), name=f"flush-{queue}")
        return self._register(spec)

    def _register(self, spec: _ConsumerSpec[M]) -> _ConsumerSpec[M]:
        spec.idle.set()
        taken = self.supervisor.states()
        spec.component = name = f"consumer:{spec.queue}"
        serial = 1
        while spec.component in taken:  # the same queue consumed twice in one process
            serial += 1
            spec.component = f"{name}#{serial}"
        self._consumers.append(spec)
        self.supervisor.start(spec.component, lambda ready: self._run_consumer(spec, ready))
        return spec

    async def _run_consumer(self, spec: _ConsumerSpec[Any], ready: Ready) -> None:
        """The `consumer:<queue>` component: declare, bind, consume until the broker stops it."""
        await self._connected.wait()
        connection = self._connection
        assert connection is not None
        channel = await connection.channel()
        lost = asyncio.Event()
        why: list[str] = []

        def closed(_: Any, exc: BaseException | None = None) -> None:
            why.append(f"channel closed: {exc!r}")
            lost.set()

        def cancelled(_: Any) -> None:
            why.append("consumer cancelled by the broker (queue deleted?)")
            lost.set()

        channel.close_callbacks.add(closed)
        try:
            await channel.set_qos(prefetch_count=spec.prefetch)
            queue = await self._declare_queue(spec.queue, channel)
            # A core queue's binding too: a queue deleted by hand comes back bound.
            binding = spec.binding or CORE_QUEUES.get(spec.queue)
            if binding and self.settings.bus_declare:  # else the definitions bind it
                exchange, key = binding
                await queue.bind(self.names(exchange), key)
            underlay = await channel.get_underlay_channel()
            underlay.on_consumer_cancel_callbacks.add(cancelled)
            spec.channel, spec.underlay = channel, underlay

            async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
                await self._handle(spec, Delivery(message))

            spec.tag = (await underlay.basic_consume(queue.name, on_message)).consumer_tag
            self.log.info("consumer_started", queue=self.names(spec.queue),
                          prefetch=spec.prefetch)
            ready()
            await lost.wait()
            if spec.stopped:  # stop_consumers closed it: wait to be removed, not restarted
                await asyncio.Event().wait()
            raise ConsumerLost(why[0] if why else "consumer lost")
        finally:
            if not channel.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.shield(channel.close())

    async def _handle(self, spec: _ConsumerSpec[Any], incoming: Delivery) -> None:
        spec.inflight += 1
        spec.idle.clear()
        try:
            model = spec.model.model_validate_json(incoming.body)
        except ValidationError as exc:
            error = Rejected(_short_validation(exc), reason="schema_invalid")
            spec.settling += 1
            try:
                await self._settle(spec, incoming, error)
            finally:
                spec.settling -= 1
            return
        if spec.batch > 1:
            spec.buffer.append((incoming, model))
            spec.wakeup.set()
            if len(spec.buffer) >= PIPELINE_MIN:
                spec.crowded.set()
            return  # the flusher settles it
        started = time.perf_counter()
        bind_message(getattr(model, "trace_id", None), getattr(model, "idempotency_key", None))
        try:
            await self._call(spec, model, incoming.channel)
        except asyncio.CancelledError:
            await self._settle(spec, incoming, None, requeue=True)
            raise
        except Exception as exc:
            await self._settle(spec, incoming, exc)
        else:
            await self._settle(spec, incoming, None)
        HANDLER_SECONDS.labels(self.service, spec.queue).observe(time.perf_counter() - started)

    async def _flush_forever(self, spec: _ConsumerSpec[Any]) -> None:
        """Hands the batch handler what arrived, one batch at a time (so order is kept).

        While a batch is being handled the next one fills up, so batches grow with the load
        and stay at one message when it is light. With `pipeline` > 1, up to that many
        batches are under way at once; each settles only after the one before it.
        """
        slots = asyncio.Semaphore(spec.pipeline)
        previous: asyncio.Future[None] | None = None
        running: set[asyncio.Task[None]] = set()
        last_size = 0
        try:
            while True:
                await spec.wakeup.wait()
                # Waiting for company pays only under load: a lone message (the last batch
                # was one message too) goes at once, so a quiet gateway adds no delay.
                if len(spec.buffer) < spec.batch and spec.max_wait_s and (
                        last_size > 1 or len(spec.buffer) > 1):
                    await asyncio.sleep(spec.max_wait_s)
                if spec.pipeline > 1:
                    if (running and previous is not None and not previous.done()
                            and len(spec.buffer) < PIPELINE_MIN):
                        # A few messages do not need a batch of their own: they wait for the
                        # one under way and join what arrives meanwhile (fewer acks, writes
                        # and wake-ups at moderate rates); a queue starts one at once.
                        spec.crowded.clear()
                        crowded = asyncio.ensure_future(spec.crowded.wait())
                        either: list[asyncio.Future[Any]] = [previous, crowded]
                        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                        crowded.cancel()
                    await slots.acquire()
                batch, spec.buffer = spec.buffer[:spec.batch], spec.buffer[spec.batch:]
                last_size = len(batch)
                if not spec.buffer:
                    spec.wakeup.clear()
                if not batch:
                    if spec.pipeline > 1:
                        slots.release()
                    continue
                if spec.pipeline == 1:
                    await self._guarded_batch(spec, batch, None)
                    continue
                settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                task = asyncio.create_task(self._guarded_batch(spec, batch, previous, settled))
                previous = settled
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _: slots.release())
        finally:
            for task in list(running):
                task.cancel()

    async def _guarded_batch(self, spec: _ConsumerSpec[Any],
                             batch: list[tuple[Delivery, Any]],
                             after: asyncio.Future[None] | None,
                             settled: asyncio.Future[None] | None = None) -> None:
        try:
            await self._handle_batch(spec, batch, after)
        except asyncio.CancelledError:
            raise
        except Exception:  # a flusher that dies would stall the queue for good
            self.log.exception("batch_handling_crashed", size=len(batch))
        finally:
            if settled is not None and not settled.done():
                settled.set_result(None)

    async def _handle_batch(self, spec: _ConsumerSpec[Any],
                            batch: list[tuple[Delivery, Any]],
                            after: asyncio.Future[None] | None = None) -> None:
        started = time.perf_counter()
        try:
            await self._call(spec, [model for _, model in batch], batch[0][0].channel)
        except asyncio.CancelledError:
            for incoming, _ in batch:
                await self._settle(spec, incoming, None, requeue=True)
            raise
        except Exception as exc:
            if after is not None:
                await asyncio.shield(after)
            if getattr(exc, "hold", False):  # stopping during an outage: give them back
                for incoming, _ in batch:
                    await self._settle(spec, incoming, None, requeue=True)
                return
            if self._broker_gone(exc, batch[0][0]):
                # Retrying one by one on a dead channel only sleeps: give the batch back (the
                # broker redelivers it) and spend none of its attempts.
                self.log.warning("batch_abandoned", size=len(batch), error=repr(exc)[:300])
                await self._wait_for_broker(batch[0][0])
                for incoming, _ in batch:
                    await self._settle(spec, incoming, None, requeue=True)
                return
            if len(batch) == 1:
                await self._settle(spec, batch[0][0], exc)
                return
            # One bad message must not fail the others: retry them one by one, each with the
            # usual outcome (ack, dead letter, or redelivery).
            self.log.warning("batch_failed", size=len(batch), error=repr(exc)[:300])
            for incoming, model in batch:
                bind_message(getattr(model, "trace_id", None),
                             getattr(model, "idempotency_key", None))
                try:
                    await self._call(spec, [model])
                except Exception as one_exc:
                    await self._settle(spec, incoming, one_exc)
                else:
                    await self._settle(spec, incoming, None)
            return
        if after is not None:
            await asyncio.shield(after)  # a multiple ack must not cover an unsettled batch
        await self._ack_batch(spec, [incoming for incoming, _ in batch])
        HANDLER_SECONDS.labels(self.service, spec.queue).observe(time.perf_counter() - started)

    async def _call(self, spec: _ConsumerSpec[Any], argument: Any,
                    channel: aiormq.abc.AbstractChannel | None = None) -> None:
        """Run the handler; during an outage of what it needs, hold the message and retry.

        A redelivery would spend the quorum queue's delivery limit, and a database that is
        down for a minute would then dead-letter everything in flight. The message stays
        unacked instead (a crash meanwhile still gets it redelivered). While it holds, the
        consumer is degraded under the supervisor (so /readyz names it); once the broker
        closed the channel the message came on (`consumer_timeout`), holding it is pointless
        and the failure is raised.
        """
        delay = HOLD_FIRST_RETRY_S
        down_since: float | None = None
        try:
            while True:
                try:
                    await spec.handler(argument)
                except Exception as exc:
                    if (not _holds(exc, down_since) or spec.stopped
                            or (channel is not None and channel.is_closed)):
                        raise
                    if down_since is None:
                        down_since = time.monotonic()
                        reason = getattr(exc, "reason", "dependency_unavailable")
                        self.log.warning("dependency_unavailable", reason=reason,
                                         error=str(exc)[:300], queue=self.names(spec.queue))
                        spec.holding += 1
                        if spec.holding == 1 and spec.component:
                            self.supervisor.degrade(spec.component,
                                                    f"holding messages: {reason}")
                    await asyncio.sleep(delay)
                    # Capped low: once the database is back, work resumes within two seconds.
                    delay = min(delay * 2, 2.0)
                    continue
                if down_since is not None:
                    self.log.info("dependency_recovered", queue=self.names(spec.queue),
                                  seconds=round(time.monotonic() - down_since, 1))
                return
        finally:
            if down_since is not None:
                spec.holding -= 1
                if spec.holding == 0 and spec.component in self.supervisor.states():
                    self.supervisor.restore(spec.component)

    async def stop_consumers(self, timeout: float = 30.0) -> None:
        """Stop taking new messages and wait for in-flight handlers to finish."""
        for spec in self._consumers:
            spec.stopped = True
            self._flush_ack(spec)
            if spec.underlay is not None and spec.tag is not None:
                with contextlib.suppress(Exception):
                    await spec.underlay.basic_cancel(spec.tag)
        waits = [spec.idle.wait() for spec in self._consumers]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), timeout)
        for spec in self._consumers:
            if spec.flusher is not None:
                spec.flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await spec.flusher
            # Removing the component cancels its run, which closes the channel.
            await self.supervisor.remove(spec.component)
            if spec.channel is not None:
                with contextlib.suppress(Exception):
                    await spec.channel.close()


def _short_validation(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:10]:
        loc = ".".join(str(p) for p in error["loc"]) or "(message)"
        parts.append(f"{loc}: {error['msg']}")
    return "; ".join(parts)


def _holds(exc: BaseException, down_since: float | None) -> bool:
    """Whether a handler's failure is an outage to wait out in place (see `_call`)."""
    if getattr(exc, "hold", False):
        return True
    return isinstance(exc, Unroutable) and UNROUTABLE_HOLD_S > 0 and (
        down_since is None or time.monotonic() - down_since < UNROUTABLE_HOLD_S)
