"""The ticket core's consumers: routed messages become ticket messages (in batches), and
connectors' delivery results are recorded on the outbound messages."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import exc as sa_exc

from intake import Message, Rejected, get_logger
from intake.message import DeliveryResult, utcnow
from intake.metrics import END_TO_END_SECONDS, MESSAGES_IN, MESSAGES_OUT

from .autoreply import AutoReplies, write_acknowledgement
from .calls import finish_calls, persist_calls
from .delivery import record_delivery
from .failures import Unpersistable, sqlstate
from .store import TicketStore

# Deliveries of one message that fail as Unpersistable before it is dead-lettered as such.
UNPERSISTABLE_AFTER = 3
# How many idempotency keys' failure counts are remembered (oldest forgotten first).
REMEMBERED_FAILURES = 10_000

log = get_logger(service="ticket-core")


def crash_probability(fault: str | None) -> float:
    """The chance of the `crash_after_commit:<p>` test hook (`INTAKE_FAULT`); 0 when unset.

    The chaos suite (tests/chaos) sets it to kill the process between the commit and the ack,
    the moment at-least-once delivery turns into a redelivery of stored messages.
    """
    name, _, value = (fault or "").partition(":")
    return float(value or 1) if name == "crash_after_commit" else 0.0


def persist_routed(store: TicketStore, fault: str | None = None,
                   auto_replies: AutoReplies | None = None,
                   ) -> Callable[[list[Message]], Awaitable[None]]:
    """One transaction per batch; returns only after the commit, so acks follow durability.

    A batch that fails is handed back one message at a time by the bus, so an unroutable or
    impossible message is dead-lettered alone.
    """
    crash = crash_probability(fault)
    failures: dict[str, int] = {}

    async def persist(messages: list[Message]) -> None:
        for message in messages:
            if message.route is None:
                raise Rejected("message reached the ticket core without a routing decision",
                               reason="not_routed")
        try:
            # Calls first: progress updates its call alone, a record learns its ticket.
            messages = await persist_calls(store, messages, utcnow())
            results = await store.persist_many(messages)
            await finish_calls(store, messages, results, utcnow())
        except sa_exc.DBAPIError as exc:
            # A value the database refuses (SQLSTATE class 22, e.g. a string over its column's
            # length) fails the same way at every delivery: dead-letter it now instead of
            # retrying it to the delivery limit.
            if isinstance(exc, sa_exc.DataError) or sqlstate(exc).startswith("22"):
                raise Rejected(f"the database refused a value: {exc.orig}",
                               reason="unpersistable") from exc
            raise Unpersistable(f"the database refused the message: {exc.orig}") from exc
        except Unpersistable as exc:
            # A batch that fails comes back one message at a time: count those deliveries,
            # and dead-letter a message once it failed the same way UNPERSISTABLE_AFTER times.
            if len(messages) == 1:
                key = messages[0].idempotency_key
                failures[key] = failures.pop(key, 0) + 1
                if len(failures) > REMEMBERED_FAILURES:
                    del failures[next(iter(failures))]
                if failures[key] >= UNPERSISTABLE_AFTER:
                    del failures[key]
                    raise Rejected(str(exc), reason="unpersistable") from exc
            raise
        if failures:
            for message in messages:
                failures.pop(message.idempotency_key, None)
        if crash and random.random() < crash:
            os._exit(137)  # test-only fault hook: committed, not acked
        # Counted per channel, one metric update per channel and batch instead of per message.
        received: dict[str, int] = {}
        stored: dict[str, int] = {}
        duplicates = tickets_created = 0
        committed_at = time.time()
        for message, result in zip(messages, results, strict=True):
            channel = message.channel
            received[channel] = received.get(channel, 0) + 1
            if result.duplicate:
                duplicates += 1
            else:
                stored[channel] = stored.get(channel, 0) + 1
                # A redelivered duplicate would count its first latency twice: stored ones only.
                END_TO_END_SECONDS.labels("ticket-core", channel).observe(
                    max(0.0, committed_at - message.received_at.timestamp()))
            tickets_created += result.created_ticket
        for channel, count in received.items():
            MESSAGES_IN.labels("ticket-core", channel).inc(count)
        for channel, count in stored.items():
            MESSAGES_OUT.labels("ticket-core", channel).inc(count)
        if auto_replies is not None and tickets_created:
            await acknowledge(store, auto_replies, messages, results)
        if len(messages) == 1:
            result = results[0]
            log.info("message_persisted", ticket_number=result.ticket_number,
                     ticket_id=result.ticket_id, duplicate=result.duplicate,
                     created_ticket=result.created_ticket)
        else:
            log.info("batch_persisted", size=len(messages), duplicates=duplicates,
                     tickets_created=tickets_created)

    return persist



async def acknowledge(store: TicketStore, auto_replies: AutoReplies, messages: list[Message],
                      results: list[Any]) -> None:
    """The acknowledgements of the tickets this batch opened (see autoreply.py)."""
    for message, result in zip(messages, results, strict=True):
        if not result.created_ticket or result.ticket_id is None:
            continue
        desk = owning_desk(message)
        rule = auto_replies.choose(message, desk, desk_closed(store, desk, message))
        if rule is None:
            continue
        ticket_id = result.ticket_id
        try:
            written = await store.write(lambda c, m=message, r=rule, t=ticket_id:
                                        write_acknowledgement(c, r, m, t, utcnow()))
        except Exception:  # committed already: the ticket stays, without its ack
            log.exception("acknowledgement_failed", ticket_id=ticket_id, rule=rule.id)
            continue
        if written is not None:
            store.outbox_pending = True
            log.info("acknowledgement_written", ticket_id=ticket_id, rule=rule.id)


def desk_closed(store: TicketStore, desk: str | None, message: Message) -> bool:
    """Whether the desk's calendar is closed when the message came (a desk without one is
    always open): `on: outside_business_hours` auto replies."""
    timelines = store.timelines
    calendar = timelines.calendars.get(timelines.desk_calendar.get(desk or "") or "")
    return calendar is not None and not calendar.in_working_time(message.received_at)


def owning_desk(message: Message) -> str | None:
    route = message.route
    if route is None or not route.deliveries:
        return None
    owner = next((d for d in route.deliveries if d.role in ("owner", "primary")),
                 route.deliveries[0])
    return owner.desk


def record_results(store: TicketStore) -> Callable[[DeliveryResult], Awaitable[None]]:
    """Consumer of `ticket_core.delivery`: an unknown outbound id is dead-lettered at once
    (`unknown_outbound`); a result that does not outrank the stored one is acked unchanged."""

    async def record(result: DeliveryResult) -> None:
        changed = await store.write(lambda c: record_delivery(c, result, utcnow()))
        log.info("delivery_recorded", outbound_id=str(result.outbound_id),
                 status=result.status, attempt=result.attempt, changed=changed)

    return record
