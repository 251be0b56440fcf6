"""Agent replies going out: a channel's `OutboundSender`, and the kernel's runner around it.

The ticket core publishes each `OutboundMessage` to `intake.outbound` with the key
`<channel>.<account>`; a connector with a sender consumes its `intake.outbound.<channel>` queue
(quorum, bound `<channel>.#`) through a `SenderRunner`, which

- sends each message at most once: a sent-ledger in the state store (namespace
  `sent:<channel>`, keyed by the outbound id) is claimed before the send and holds the outcome
  before the ack, so a redelivered message is acked and its result published again, never sent
  again. A send whose outcome was never recorded (the process died mid-send) is reported
  `failed` with reason `outcome_unknown`, unless the sender declares `resend_unknown` (its
  provider drops a repeat of the same id itself);
- publishes a `DeliveryResult` to `intake.delivery`, key `<channel>.<account>`, for each attempt;
- dead-letters a message the sender refused for good with `Failed(dead_letter=True)` (nothing
  went out: an SMTP relay's 5xx), so `intake dlq replay` brings it back and it is sent again,
  once per dead letter, as a later attempt;
- retries a transport failure the sender calls transient (`RetryLater`, or a raised
  `Transient`) from its own durable queue in the state store (`retry:<channel>`), acking the
  broker's message at once: a retry that outlasts RabbitMQ's 30-minute consumer_timeout cannot
  stay unacked. After `max_attempts` the message is `failed` with the transport's reason;
- lets a sender take a message into a durable queue of its own (`Taken`: email's deferred mail,
  WeChat's replies waiting for the customer) and report each later attempt with `kit.report`;
  `Taken(status="window_expired", reason=…)` also tells the agent at once why it has not gone
  out yet (a result for this attempt that a later attempt outranks).

A sender is a class taking a `SenderKit`: `Channel(sender=LoopbackSender)`; it may have async
`start()` and `close()` for its own background work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from prometheus_client import Counter
from pydantic import BaseModel

from .claims import owner_is_gone, this_process
from .errors import Rejected, Transient
from .logging import get_logger
from .message import DeliveryResult, OutboundMessage, utcnow
from .sending_dead import claim_replay, dead_letter_outbound
from .settings import IntakeSettings
from .state import StateNamespace, StateQueue, StateStore

__all__ = [
    "Failed", "OutboundSender", "RetryLater", "SendOutcome", "SenderKit", "SenderRunner", "Sent",
    "Suppressed", "Taken",
]

DELIVERY_RESULTS = Counter("intake_delivery_results_total",
                           "Delivery results a connector published, by channel and status",
                           ["service", "channel", "status"])
DEFAULT_RETRY_DELAYS_S = (30.0, 120.0, 600.0, 1800.0, 3600.0)
RETRY_LEASE_S = 300.0  # a retry being sent is hidden this long from other replicas
RETRY_POLL_S = 1.0
IN_FLIGHT_POLL_S = 0.2
DEFAULT_SEND_TIMEOUT_S = 60.0  # a send is cut off after this (its claim is then stale)


# -- what a sender returns --------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """The transport accepted it; `delivered` when the transport already knows it arrived."""

    provider_message_id: str | None = None
    status: Literal["sent", "delivered"] = "sent"


@dataclass(frozen=True)
class Failed:
    """It will never go out this way: `reason` is a snake_case code the agent sees.

    With `dead_letter` (the provider refused it for good, e.g. an SMTP relay's 5xx, and nothing
    went out) the runner also dead-letters the outbound message, reason and `detail` in its
    headers, so `intake dlq replay` sends it again once the cause is fixed.
    """

    reason: str
    detail: str = ""
    dead_letter: bool = False


@dataclass(frozen=True)
class Suppressed:
    """Held back on purpose and never sent (a loop breaker: a cap, a bounced address);
    `reason` is a snake_case code the agent sees. Final, like `Failed`."""

    reason: str
    detail: str = ""


@dataclass(frozen=True)
class RetryLater:
    """Not now (a 4xx greylisting, a rate limit, the provider down); `after_s` if it said."""

    reason: str
    after_s: float | None = None


@dataclass(frozen=True)
class Taken:
    """The sender keeps it in a durable queue of its own and reports with `kit.report` later.

    With `status` (`window_expired`: WeChat's 48-hour window closed) the runner publishes that
    status and `reason` as this attempt's result now; the later attempt's result outranks it.
    """

    status: Literal["window_expired"] | None = None
    reason: str | None = None


SendOutcome = Sent | Failed | Suppressed | RetryLater | Taken


@runtime_checkable
class OutboundSender(Protocol):
    """A channel's outbound transport. Optional attributes, read with their defaults:

    - `max_attempts: int = 5`: sends before a `RetryLater` becomes `failed`;
    - `retry_delays_s: Sequence[float]`: the wait before each retry (the last one repeats);
    - `send_timeout_s: float = 60`: a send taking longer is cut off (outcome unknown);
    - `resend_unknown: bool = False`: True when the provider drops a repeat of one outbound id
      itself, so a send whose outcome was lost may simply be made again;
    - async `start()` / `close()`: run and stop the sender's own background work.

    `send` returns an outcome or raises: `Transient` is `RetryLater`, `Rejected` is `Failed`
    with its reason, anything else `Failed` with `sender_error` (it may have gone out: never
    sent twice).
    """

    async def send(self, message: OutboundMessage) -> SendOutcome: ...


@dataclass
class SenderKit:
    """What the kernel hands a sender: its channel, the state store, and a way to report."""

    channel: str
    state: StateStore
    runner: SenderRunner
    settings: Any = None  # the channel's own settings object, when the service has one
    accounts: Any = None  # the channel's accounts (the YAML section), when the service has one

    async def report(self, message: OutboundMessage, outcome: Sent | Failed | Suppressed, *,
                     attempt: int) -> None:
        """Record and publish the result of a later attempt of a message the sender `Taken`.

        Raises `BrokerUnavailable` if the result could not be published: the ledger has it,
        so the sender retries the report, not the send.
        """
        await self.runner.record(message, outcome, attempt=attempt)


@dataclass(frozen=True)
class ConsumerSpec:
    """What the service registers with the bus to run a sender (see `SenderRunner.consumer`)."""

    queue: str
    handler: Callable[[OutboundMessage], Any]
    model: type[BaseModel]
    binding: tuple[str, str]
    prefetch: int


@dataclass
class SenderRunner:
    """Turns a channel's sender into a consumer of `intake.outbound.<channel>`.

    `bus` needs `publish(exchange, key, body, message_id=…)` and, for `start`,
    `consume(queue, handler, model, prefetch=…, binding=…)`: the kernel's `Bus`.
    """

    bus: Any
    channel: str
    sender_factory: Callable[[SenderKit], OutboundSender]
    state: StateStore
    prefetch: int = 16
    settings: Any = None
    accounts: Any = None
    poll_s: float = RETRY_POLL_S
    sender: OutboundSender | None = None
    _retry_task: asyncio.Task[None] | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    log: Any = None

    def __post_init__(self) -> None:
        self.ledger: StateNamespace = self.state.namespace(f"sent:{self.channel}")
        self.retries: StateQueue = self.state.queue(f"retry:{self.channel}")
        self.log = get_logger(service=self.channel, component="sender")

    # -- life --------------------------------------------------------------------------------

    @classmethod
    def for_service(cls, bus: Any, channel: str, sender_factory: Callable[[SenderKit], Any],
                    settings: IntakeSettings, *, channel_settings: Any = None,
                    accounts: Any = None) -> SenderRunner:
        """The runner a service wires for `Channel.sender`: the state store of `settings`
        (`INTAKE_STATE_URL`, else `var/state.sqlite3`). Then `await runner.start()` once the
        bus exists (the bus restarts the consumer after a reconnect) and `await runner.close()`
        at shutdown, after the bus stopped its consumers."""
        return cls(bus, channel, sender_factory, StateStore.from_settings(settings),
                   settings=channel_settings, accounts=accounts)

    @staticmethod
    def context(channel: str, sender_factory: Callable[[SenderKit], Any],
                ) -> Callable[[Any], AsyncIterator[None]]:
        """An aiohttp cleanup context running the channel's sender in a service, after the
        bus context: `Service(contexts=[connector_bus_context, …,
        SenderRunner.context("email", EmailSender)])`."""

        async def run_sender(app: Any) -> AsyncIterator[None]:
            from .service import ACCOUNTS, BUS, SERVICE_SETTINGS, SETTINGS

            runner = SenderRunner.for_service(
                app[BUS], channel, sender_factory, app[SETTINGS],
                channel_settings=app.get(SERVICE_SETTINGS), accounts=app.get(ACCOUNTS))
            await runner.start()
            yield
            await runner.close()

        return run_sender

    def consumer(self) -> ConsumerSpec:
        return ConsumerSpec(queue=f"outbound.{self.channel}", handler=self.handle,
                            model=OutboundMessage, binding=("outbound", f"{self.channel}.#"),
                            prefetch=self.prefetch)

    async def open(self) -> None:
        """Open the state store, build and start the sender, start the retry loop."""
        await self.state.open()
        if self.sender is None:
            self.sender = self.sender_factory(SenderKit(
                channel=self.channel, state=self.state, runner=self,
                settings=self.settings, accounts=self.accounts))
        start = getattr(self.sender, "start", None)
        if start is not None:
            await start()
        self._retry_task = asyncio.create_task(self._retry_forever(),
                                               name=f"sender-retries-{self.channel}")

    async def start(self) -> None:
        """`open`, then consume the outbound queue on `bus` (its supervisor restarts it)."""
        await self.open()
        spec = self.consumer()
        self.bus.consume(spec.queue, spec.handler, spec.model, prefetch=spec.prefetch,
                         binding=spec.binding)

    async def close(self) -> None:
        if self._retry_task is not None:
            self._retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._retry_task
            self._retry_task = None
        close = getattr(self.sender, "close", None)
        if close is not None:
            await close()
        await self.state.close()

    # -- the consumer --------------------------------------------------------------------------

    async def handle(self, message: OutboundMessage) -> None:
        """One outbound message from the queue; returns once it may be acked.

        The work is shielded: when the broker connection drops mid-send the consumer is
        cancelled, but the send's outcome must still reach the ledger, or the redelivery could
        not tell a sent message from one never sent.
        """
        if message.channel != self.channel:
            raise Rejected(f"an outbound message for {message.channel} reached {self.channel}",
                           reason="wrong_channel")
        work = asyncio.ensure_future(self._handle(message))
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            work.add_done_callback(self._log_orphan)
            raise

    def _log_orphan(self, work: asyncio.Future[None]) -> None:
        """The outcome of work whose consumer was cancelled (the redelivery settles it)."""
        if not work.cancelled() and work.exception() is not None:
            self.log.warning("outbound_unsettled", error=repr(work.exception())[:300])

    async def _handle(self, message: OutboundMessage) -> None:
        key = str(message.id)
        fresh = {"state": "sending", "attempt": 1, "at": time.time(), "owner": this_process()}
        if await self.ledger.put_new(key, fresh):
            await self._attempt(message, 1)
            return
        entry = await self.ledger.get(key) or fresh
        await self._resume(message, entry)

    async def _resume(self, message: OutboundMessage, entry: dict[str, Any]) -> None:
        """A message seen before: publish its result again, or settle a send that was cut."""
        state = entry.get("state")
        if state == "done" and entry.get("dead_id") and await self._replayed(message, entry):
            return
        if state == "done":
            await self._publish(DeliveryResult.model_validate(entry["result"]))
            self.log.info("outbound_repeat_acked", outbound_id=str(message.id),
                          status=entry["result"]["status"])
            return
        if state in ("taken", "retrying"):
            if entry.get("held"):  # its result may not have been confirmed: publish again
                await self._publish(DeliveryResult.model_validate(entry["held"]))
            return  # the sender's queue or the retry queue has it
        if state == "sending":
            # Another consumer (this one before its channel was lost) may still be sending:
            # its outcome lands in the ledger within the send timeout. Wait here rather than
            # requeue, which would spend the message's delivery attempts.
            entry = await self._settled_or_stale(str(message.id), entry)
            if entry.get("state") != "sending":
                await self._resume(message, entry)
                return
        attempt = int(entry.get("attempt", 1))
        if self._declared("resend_unknown", False):
            await self.ledger.put(str(message.id), {"state": "sending", "attempt": attempt + 1,
                                                    "at": time.time(), "owner": this_process()})
            await self._attempt(message, attempt + 1)
            return
        self.log.warning("outbound_outcome_unknown", outbound_id=str(message.id),
                         attempt=attempt)
        await self.record(message, Failed("outcome_unknown",
                                          "the send was cut off before its outcome was known"),
                          attempt=attempt)

    async def _settled_or_stale(self, key: str, entry: dict[str, Any]) -> dict[str, Any]:
        """The ledger entry once it leaves `sending`, or as it is when its claim goes stale:
        at the send timeout, or at once when the process that claimed it is gone."""
        deadline = float(entry.get("at", 0)) + self._send_timeout_s() + 1.0
        while entry.get("state") == "sending" and time.time() < deadline:
            if owner_is_gone(entry.get("owner")):
                break
            await asyncio.sleep(IN_FLIGHT_POLL_S)
            entry = await self.ledger.get(key) or entry
        return entry

    async def _attempt(self, message: OutboundMessage, attempt: int,
                       queued_id: int | None = None) -> None:
        outcome = await self._send(message)
        dead_id: str | None = None
        if isinstance(outcome, Failed) and outcome.dead_letter:
            dead_id = await dead_letter_outbound(self.bus, message, outcome, self.log)
            if dead_id is None:  # not dead-lettered: try the send again rather than lose it
                outcome = RetryLater("dead_letter_unavailable")
        if isinstance(outcome, RetryLater):
            if attempt >= int(self._declared("max_attempts", 5)):
                outcome_final: Sent | Failed | Suppressed = Failed(outcome.reason,
                                                                   "retries exhausted")
                await self._finish_retry(queued_id)
                await self.record(message, outcome_final, attempt=attempt)
                return
            delay = outcome.after_s if outcome.after_s is not None else self._delay(attempt)
            item = {"message": message.model_dump(mode="json", by_alias=True),
                    "attempt": attempt + 1}
            # Queued before the ledger says so: a crash between the two leaves the message
            # reported `outcome_unknown` at worst, never "retrying" with nobody to retry it.
            if queued_id is None:
                await self.retries.push(item, delay_s=delay)
            else:
                await self.retries.retry(queued_id, delay_s=delay, item=item)
            await self.ledger.put(str(message.id), {"state": "retrying", "attempt": attempt,
                                                    "reason": outcome.reason,
                                                    "at": time.time()})
            self.log.info("outbound_retry_scheduled", outbound_id=str(message.id),
                          attempt=attempt, reason=outcome.reason, delay_s=delay)
            self._wake.set()
            return
        if isinstance(outcome, Taken):
            entry: dict[str, Any] = {"state": "taken", "attempt": attempt, "at": time.time()}
            held = None
            if outcome.status is not None:
                held = DeliveryResult(outbound_id=message.id, channel=message.channel,
                                      account=message.account, status=outcome.status,
                                      reason=outcome.reason, attempt=attempt,
                                      occurred_at=utcnow())
                entry["held"] = held.model_dump(mode="json")
            await self.ledger.put(str(message.id), entry)
            await self._finish_retry(queued_id)
            self.log.info("outbound_taken", outbound_id=str(message.id), attempt=attempt,
                          status=outcome.status, reason=outcome.reason)
            if held is not None:
                await self._publish(held)
            return
        await self.record(message, outcome, attempt=attempt, dead_id=dead_id)
        await self._finish_retry(queued_id)

    async def _replayed(self, message: OutboundMessage, entry: dict[str, Any]) -> bool:
        """Send again a message whose last attempt was dead-lettered (`sending_dead.py`)."""
        attempt = await claim_replay(self.state, self.ledger, message, entry)
        if attempt is None:
            return False
        self.log.info("outbound_replayed", outbound_id=str(message.id),
                      dead_id=entry["dead_id"], attempt=attempt)
        await self._attempt(message, attempt)
        return True

    async def _send(self, message: OutboundMessage) -> SendOutcome:
        assert self.sender is not None, "SenderRunner.open() first"
        try:
            async with asyncio.timeout(self._send_timeout_s()):
                outcome = await self.sender.send(message)
        except TimeoutError:
            # Cut off mid-send: it may have gone out, so only a sender whose provider drops
            # repeats may try again.
            if self._declared("resend_unknown", False):
                return RetryLater("send_timeout")
            return Failed("outcome_unknown", "the send did not finish within its timeout")
        except Transient as exc:
            return RetryLater(exc.reason)
        except Rejected as exc:
            return Failed(exc.reason, str(exc))
        except Exception as exc:
            # It may have gone out before the error: at most once means not again.
            self.log.exception("sender_failed", outbound_id=str(message.id))
            return Failed("sender_error", repr(exc)[:500])
        if not isinstance(outcome, Sent | Failed | Suppressed | RetryLater | Taken):
            return Failed("sender_error", f"send() returned {outcome!r}")
        return outcome

    async def record(self, message: OutboundMessage, outcome: Sent | Failed | Suppressed, *,
                     attempt: int, dead_id: str | None = None) -> None:
        """Write the final outcome to the ledger, then publish it as a DeliveryResult
        (`dead_id`: the outbound message was dead-lettered, so a replay may send it)."""
        if isinstance(outcome, Sent):
            result = DeliveryResult(outbound_id=message.id, channel=message.channel,
                                    account=message.account, status=outcome.status,
                                    provider_message_id=outcome.provider_message_id,
                                    attempt=attempt, occurred_at=utcnow())
        elif isinstance(outcome, Suppressed):
            result = DeliveryResult(outbound_id=message.id, channel=message.channel,
                                    account=message.account, status="suppressed",
                                    reason=outcome.reason, attempt=attempt,
                                    occurred_at=utcnow())
        else:
            result = DeliveryResult(outbound_id=message.id, channel=message.channel,
                                    account=message.account, status="failed",
                                    reason=outcome.reason, attempt=attempt,
                                    occurred_at=utcnow())
        entry: dict[str, Any] = {"state": "done", "result": result.model_dump(mode="json"),
                                 "at": time.time()}
        if dead_id is not None:
            entry["dead_id"] = dead_id
        await self.ledger.put(str(message.id), entry)
        self.log.info("outbound_settled", outbound_id=str(message.id), status=result.status,
                      reason=result.reason, attempt=attempt)
        await self._publish(result)

    async def _publish(self, result: DeliveryResult) -> None:
        await self.bus.publish("delivery", f"{result.channel}.{result.account}",
                               result.model_dump_json().encode(),
                               message_id=f"{result.outbound_id}:{result.attempt}")
        # The sender runs in its connector's service, named after the channel.
        DELIVERY_RESULTS.labels(result.channel, result.channel, result.status).inc()

    # -- the retry queue -----------------------------------------------------------------------

    async def _retry_forever(self) -> None:
        while True:
            try:
                await self.retry_due()
                wait = await self.retries.next_due_in()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("outbound_retries_failed")
                wait = None
            self._wake.clear()
            timeout = self.poll_s if wait is None else min(max(wait, 0.05), self.poll_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def retry_due(self, limit: int = 16, *, due_by: float | None = None) -> int:
        """Send the retries that are due (by `due_by`, default now); returns how many."""
        claimed = await self.retries.claim(limit, lease_s=RETRY_LEASE_S, due_by=due_by)
        for queued in claimed:
            message = OutboundMessage.model_validate(queued.item["message"])
            attempt = int(queued.item["attempt"])
            entry = await self.ledger.get(str(message.id)) or {}
            if entry.get("state") == "done":  # settled, only its result was not published
                await self._publish(DeliveryResult.model_validate(entry["result"]))
                await self.retries.done(queued.id)
                continue
            if entry.get("state") == "sending" and entry.get("attempt") == attempt:
                if not self._declared("resend_unknown", False):  # this retry was cut mid-send
                    await self.retries.done(queued.id)
                    await self.record(message, Failed("outcome_unknown"), attempt=attempt)
                    continue
            await self.ledger.put(str(message.id), {"state": "sending", "attempt": attempt,
                                                    "at": time.time(), "owner": this_process()})
            await self._attempt(message, attempt, queued_id=queued.id)
        return len(claimed)

    async def _finish_retry(self, queued_id: int | None) -> None:
        if queued_id is not None:
            await self.retries.done(queued_id)

    def _declared(self, name: str, default: Any) -> Any:
        return getattr(self.sender, name, default)

    def _send_timeout_s(self) -> float:
        return float(self._declared("send_timeout_s", DEFAULT_SEND_TIMEOUT_S))

    def _delay(self, attempt: int) -> float:
        delays: Sequence[float] = self._declared("retry_delays_s", DEFAULT_RETRY_DELAYS_S)
        return float(delays[min(attempt, len(delays)) - 1]) if delays else 0.0
