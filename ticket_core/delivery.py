"""Delivery results: which one outranks the stored one, and recording it on the outbound message.

DESIGN.md: a later attempt outranks an earlier one; within an attempt a final failure outranks
`read` > `delivered` > `sent` (a late `sent` never hides a `read`; a retry's `sent` replaces the
first attempt's `failed`). A result for an outbound id the ticket core never stored raises
`UnknownOutbound` (dead-lettered at once: it will not become known by retrying).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from intake.errors import Rejected
from intake.message import DeliveryResult

from .events import PlannedEvent
from .planner import TicketRef
from .statements import MESSAGES, TICKETS, CoreWriteStatements
from .store import append_events

RANK = {"pending": 0, "sent": 1, "delivered": 2, "read": 3,
        "failed": 4, "window_expired": 4, "suppressed": 4}


class UnknownOutbound(Rejected):
    reason = "unknown_outbound"


def outranks(status: str, attempt: int, stored_status: str | None,
             stored_attempt: int | None) -> bool:
    """Whether a result (status, attempt) replaces the stored one."""
    return (attempt, RANK[status]) > (stored_attempt or 0, RANK[stored_status or "pending"])


def record_delivery(connection: Connection, result: DeliveryResult, now: datetime,
                    ) -> bool:
    """Record `result` if it outranks what is stored; True when it changed the message."""
    row = connection.execute(
        select(MESSAGES.c.id, MESSAGES.c.ticket_id, MESSAGES.c.customer_id,
               MESSAGES.c.channel, MESSAGES.c.delivery_status, MESSAGES.c.delivery_attempt,
               TICKETS.c.number, TICKETS.c.status, TICKETS.c.desk)
        .select_from(MESSAGES.outerjoin(TICKETS, TICKETS.c.id == MESSAGES.c.ticket_id))
        .where(MESSAGES.c.id == str(result.outbound_id), MESSAGES.c.direction == "out")
        # Results of one message arrive together (a connector reports sent, then delivered):
        # on PostgreSQL two transactions would both read `pending` and the later commit win.
        .with_for_update(of=MESSAGES)
    ).first()
    if row is None:
        raise UnknownOutbound(f"no outbound message {result.outbound_id}")
    if not outranks(result.status, result.attempt, row.delivery_status, row.delivery_attempt):
        return False
    if result.provider_message_id and result.status in ("sent", "delivered", "read"):
        # Our Message-ID on the outgoing mail: a reply naming it threads onto this ticket.
        connection.execute(update(MESSAGES).where(MESSAGES.c.id == row.id)
                           .values(message_id=result.provider_message_id[:998]))
    set_status(connection, row, result.status, result.reason, result.attempt, now, extra={
        "provider_message_id": result.provider_message_id,
        "occurred_at": result.occurred_at.isoformat()}, actor=f"connector:{result.channel}")
    return True


def set_status(connection: Connection, row: Any, status: str, reason: str | None,
               attempt: int, now: datetime, *, extra: dict[str, Any] | None = None,
               actor: str = "system") -> None:
    """Store a delivery status on an outbound message row and log `message.delivery_updated`."""
    connection.execute(
        update(MESSAGES).where(MESSAGES.c.id == row.id)
        .values(delivery_status=status, delivery_reason=(reason or "")[:256] or None,
                delivery_attempt=attempt))
    ticket = (TicketRef(id=row.ticket_id, number=row.number, status=row.status,
                        customer_id=row.customer_id, channel=row.channel, desk=row.desk)
              if row.ticket_id else None)
    append_events(CoreWriteStatements(connection), [PlannedEvent(
        "message.delivery_updated", now, ticket, row.customer_id, actor,
        {"message_id": row.id, "status": status, "reason": reason, "attempt": attempt,
         "previous_status": row.delivery_status, **(extra or {})},
        before={"message_id": row.id, "delivery_status": row.delivery_status},
        after={"message_id": row.id, "delivery_status": status, "reason": reason,
               "attempt": attempt})])
