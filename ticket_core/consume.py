"""The ticket core's consumer: a routed message becomes a persisted ticket message."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from intake import Message, Rejected, get_logger
from intake.metrics import MESSAGES_IN, MESSAGES_OUT

from .store import TicketStore

log = get_logger(service="ticket-core")


def persist_routed(store: TicketStore) -> Callable[[Message], Awaitable[None]]:
    """Returns only after the commit, so the bus acks only what is durable."""

    async def persist(message: Message) -> None:
        MESSAGES_IN.labels("ticket-core", message.channel).inc()
        if message.route is None:
            raise Rejected("message reached the ticket core without a routing decision",
                           reason="not_routed")
        result = await store.persist(message)
        MESSAGES_OUT.labels("ticket-core", message.channel).inc()
        log.info("message_persisted", ticket_number=result.ticket_number,
                 ticket_id=result.ticket_id, duplicate=result.duplicate,
                 created_ticket=result.created_ticket)

    return persist
