"""The bus on RabbitMQ: topology, confirmed publish, ack-after-work consume, dead letters.

Channel code never touches aio-pika; it publishes through `Publisher` (intake.outbox) and
consumes by handing `Bus.consume` an async function that takes a model and returns, or raises a
kernel error: `Rejected` dead-letters at once, anything else is retried up to the delivery limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)
from pydantic import BaseModel, ValidationError

from . import amqp
from .errors import BrokerUnavailable, Rejected, Unroutable
from .logging import bind_message, get_logger
from .metrics import BROKER_CONNECTED, DEAD_LETTERED, ERRORS, HANDLER_SECONDS
from .settings import IntakeSettings

M = TypeVar("M", bound=BaseModel)
Handler = Callable[[M], Awaitable[None]]
BatchHandler = Callable[[list[M]], Awaitable[None]]

EXCHANGES = ("inbound", "routed", "outbound", "delivery", "events", "dead")
# queue -> (exchange it is bound to, binding key)
CORE_QUEUES: dict[str, tuple[str, str]] = {
    "router": ("inbound", "#"),
    "ticket_core": ("routed", "#"),
    "ticket_core.delivery": ("delivery", "#"),
}
REASON_HEADER = "x-intake-reason"
HOLD_FIRST_RETRY_S = 0.2
# With `pipeline` > 1, a new batch overlaps the one under way only once this many wait.
PIPELINE_MIN = 16
# Batches' acks go out together, one `multiple` ack per this interval (see Bus._ack_later).
ACK_DELAY_S = 0.005
_AMQP_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, OSError, RuntimeError)
COALESCED_WRITES = amqp.install()


@dataclass(frozen=True)
class Names:
    """Exchange and queue names, with the test run's prefix (`INTAKE_BUS_PREFIX`)."""

    prefix: str = ""

    def __call__(self, logical: str) -> str:
        name = f"intake.{logical}"
        return f"{self.prefix}.{name}" if self.prefix else name


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
        self.delivery_tag: int = message.delivery.delivery_tag  # type: ignore[union-attr]

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


class Bus:
    """One connection per process: a confirmed publish channel and a channel per consumer."""

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
        self._consumers: list[_ConsumerSpec[Any]] = []
        self._connected = asyncio.Event()
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_connected: list[Callable[[], Awaitable[None]]] = []
        if not COALESCED_WRITES:
            self.log.warning("amqp_writes_not_coalesced", hint="aiormq is not the pinned "
                             "version: one socket write per frame, slower under load")

    # -- connection -------------------------------------------------------------------------

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
            for spec in self._consumers:
                if not spec.stopped:
                    await self._start_consumer(spec)
            for callback in self.on_connected:
                await callback()
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        self._connected.set()
        BROKER_CONNECTED.labels(self.service).set(1)

    async def _declare(self, channel: AbstractChannel) -> None:
        self._exchanges = {}
        for logical in EXCHANGES:
            self._exchanges[logical] = await channel.declare_exchange(
                self.names(logical), aio_pika.ExchangeType.TOPIC, durable=True)
        dead = await channel.declare_queue(
            self.names("dead"), durable=True, arguments={"x-queue-type": "quorum"})
        await dead.bind(self._exchanges["dead"], "#")
        for logical, (exchange, key) in CORE_QUEUES.items():
            queue = await self.declare_queue(logical, channel)
            await queue.bind(self._exchanges[exchange], key)

    def queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            # A poison message ends in intake.dead instead of looping forever.
            "x-delivery-limit": self.settings.delivery_limit,
            "x-dead-letter-exchange": self.names("dead"),
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    async def declare_queue(self, logical: str, channel: AbstractChannel | None = None,
                            ) -> AbstractQueue:
        """Declare a quorum queue; if it exists with other arguments, use it as it is.

        RabbitMQ refuses a redeclaration with different arguments (say, another delivery
        limit) by closing the channel; a service must still start, so it warns and goes on.
        """
        assert self._connection is not None
        channel = channel or self._require_channel()
        name = self.names(logical)
        probe = await self._connection.channel()
        try:
            await probe.declare_queue(name, durable=True, arguments=self.queue_arguments())
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            self.log.warning("queue_arguments_differ", queue=name, error=str(exc),
                             hint="the queue keeps its arguments; set them by policy")
        finally:
            if not probe.is_closed:
                await probe.close()
        return await channel.get_queue(name, ensure=True)

    def _require_channel(self) -> AbstractChannel:
        if not self.connected and self._publish_channel is None:
            raise BrokerUnavailable("not connected to the broker")
        assert self._publish_channel is not None
        return self._publish_channel

    async def close(self) -> None:
        """Stop consumers (finishing in-flight work), then close the connection."""
        await self.stop_consumers()
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

    # -- publish ----------------------------------------------------------------------------

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
                           timeout: float | None = None) -> None:
        """Publish (routing key, body, headers) items in order; return once all are confirmed.

        One deadline for the lot instead of one timer per message, and no task per message:
        the frames are queued at once and the confirmations awaited together. The first
        failure raises (others may be confirmed: the caller's redelivery makes them
        duplicates, which are harmless).
        """
        if not self.connected:
            raise BrokerUnavailable("not connected to the broker")
        target = self._exchanges[exchange]
        batch = [(routing_key, body, _properties(headers))
                 for routing_key, body, headers in items]

        async def confirm_all() -> None:
            channel = await target.channel.get_underlay_channel()
            waits = amqp.start_publishes(channel, target.name, batch)
            async with asyncio.timeout(timeout or self.settings.publish_timeout_s):
                await asyncio.gather(*waits)

        if batch:
            await self._confirmed(confirm_all())

    async def _send(self, exchange: str, routing_key: str, body: bytes,
                    headers: dict[str, Any] | None, message_id: str | None,
                    timeout: float | None, mandatory: bool = True) -> Any:
        if not self.connected:
            raise BrokerUnavailable("not connected to the broker")
        target = self._exchanges[exchange]
        properties = _properties(headers, message_id)
        channel = await target.channel.get_underlay_channel()
        # Not aio-pika's publish: it awaits each frame's drain under the channel's lock,
        # which serialises concurrent publishes; the confirm is what we wait for.
        return await amqp.publish(channel, body, exchange=target.name, routing_key=routing_key,
                                  properties=properties, mandatory=mandatory, timeout=timeout)

    @staticmethod
    async def _confirmed(sending: Awaitable[Any]) -> None:
        try:
            await sending
        except aiormq.exceptions.PublishError as exc:  # basic.return: no queue is bound
            raise Unroutable(f"no queue took the message: {exc}") from exc
        except aio_pika.exceptions.DeliveryError as exc:
            raise BrokerUnavailable(f"broker refused the message: {exc}") from exc
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

    # -- consume ----------------------------------------------------------------------------

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
        self._consumers.append(spec)
        if self.connected:
            self._tasks.add(task := asyncio.create_task(self._start_consumer(spec)))
            task.add_done_callback(self._tasks.discard)
        return spec

    async def _start_consumer(self, spec: _ConsumerSpec[Any]) -> None:
        assert self._connection is not None
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=spec.prefetch)
        queue = await self.declare_queue(spec.queue, channel)
        if spec.binding:
            exchange, key = spec.binding
            await queue.bind(self.names(exchange), key)
        spec.channel = channel
        underlay = await channel.get_underlay_channel()
        spec.underlay = underlay

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            await self._handle(spec, Delivery(message))

        spec.tag = (await underlay.basic_consume(queue.name, on_message)).consumer_tag
        self.log.info("consumer_started", queue=self.names(spec.queue), prefetch=spec.prefetch)

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
            await self._call(spec, model)
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
                        await asyncio.wait([previous, crowded],
                                           return_when=asyncio.FIRST_COMPLETED)
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
            await self._call(spec, [model for _, model in batch])
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

    async def _call(self, spec: _ConsumerSpec[Any], argument: Any) -> None:
        """Run the handler; during an outage of what it needs, hold the message and retry.

        A redelivery would spend the quorum queue's delivery limit, and a database that is
        down for a minute would then dead-letter everything in flight. The message stays
        unacked instead (a crash meanwhile still gets it redelivered).
        """
        delay = HOLD_FIRST_RETRY_S
        down_since: float | None = None
        while True:
            try:
                await spec.handler(argument)
            except Exception as exc:
                if not getattr(exc, "hold", False) or spec.stopped:
                    raise
                if down_since is None:
                    down_since = time.monotonic()
                    self.log.warning("dependency_unavailable", reason=exc.reason,  # type: ignore[attr-defined]
                                     error=str(exc)[:300], queue=self.names(spec.queue))
                await asyncio.sleep(delay)
                # Capped low: once the database is back, work resumes within two seconds.
                delay = min(delay * 2, 2.0)
                continue
            if down_since is not None:
                self.log.info("dependency_recovered", queue=self.names(spec.queue),
                              seconds=round(time.monotonic() - down_since, 1))
            return

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
        origin = {"queue": self.names(spec.queue), "exchange": incoming.exchange,
                  "routing_key": incoming.routing_key or "",
                  "headers": {k: v for k, v in (incoming.headers or {}).items()
                              if not str(k).startswith("x-")}}
        reason = getattr(exc, "reason", "handler_failed")
        ERRORS.labels(self.service, reason).inc()
        if isinstance(exc, Rejected):
            await self._dead_letter_or_requeue(incoming, reason, str(exc), origin)
            return
        deliveries = int((incoming.headers or {}).get("x-delivery-count", 0) or 0) + 1
        if deliveries >= self.settings.delivery_limit:
            await self._dead_letter_or_requeue(
                incoming, "retries_exhausted", f"{reason}: {exc!r}", origin)
            return
        self.log.warning("message_retried", reason=reason, error=repr(exc)[:500],
                         delivery=deliveries)
        # Back off before the redelivery so an outage does not become a hot loop.
        await asyncio.sleep(min(0.1 * 2 ** deliveries, 5.0))
        await _quietly(incoming.nack(requeue=True))

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
            if spec.channel is not None:
                with contextlib.suppress(Exception):
                    await spec.channel.close()

    # -- dead letters (ops) -----------------------------------------------------------------

    async def browse_dead(self, limit: int = 1000) -> list[DeadLetter]:
        """Read dead letters without removing them (they return to the queue on close)."""
        assert self._connection is not None
        channel = await self._connection.channel()
        letters = []
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


def _properties(headers: dict[str, Any] | None,
                message_id: str | None = None) -> aiormq.spec.Basic.Properties:
    return aiormq.spec.Basic.Properties(headers=headers or {}, message_id=message_id,
                                        content_type="application/json",
                                        delivery_mode=2)  # persistent


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _opt(value: Any) -> str | None:
    return None if value is None else _text(value)


def _short_validation(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:10]:
        loc = ".".join(str(p) for p in error["loc"]) or "(message)"
        parts.append(f"{loc}: {error['msg']}")
    return "; ".join(parts)


async def _quietly(awaitable: Awaitable[Any]) -> None:
    # The channel may be gone (broker restart); the broker then redelivers on its own.
    with contextlib.suppress(Exception):
        await awaitable
