"""The ticket core's consumer: routed messages become persisted ticket messages, in batches."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from intake import Message, Rejected, get_logger
from intake.metrics import MESSAGES_IN, MESSAGES_OUT

from .store import TicketStore

log = get_logger(service="ticket-core")


def persist_routed(store: TicketStore) -> Callable[[list[Message]], Awaitable[None]]:
    """One transaction per batch; returns only after the commit, so acks follow durability.

    A batch that fails is handed back one message at a time by the bus, so an unroutable or
    impossible message is dead-lettered alone.
    """

    async def persist(messages: list[Message]) -> None:
        for message in messages:
            if message.route is None:
                raise Rejected("message reached the ticket core without a routing decision",
                               reason="not_routed")
        results = await store.persist_many(messages)
        for message, result in zip(messages, results, strict=True):
            MESSAGES_IN.labels("ticket-core", message.channel).inc()
            if not result.duplicate:
                MESSAGES_OUT.labels("ticket-core", message.channel).inc()
        if len(messages) == 1:
            result = results[0]
            log.info("message_persisted", ticket_number=result.ticket_number,
                     ticket_id=result.ticket_id, duplicate=result.duplicate,
                     created_ticket=result.created_ticket)
        else:
            log.info("batch_persisted", size=len(messages),
                     duplicates=sum(r.duplicate for r in results),
                     tickets_created=sum(r.created_ticket for r in results))

    return persist
