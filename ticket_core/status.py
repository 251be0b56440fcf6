"""A ticket's plain status change (`PATCH /api/v1/tickets/{id}`), with its `ticket.updated`.

The agent workflow issue governs this later (a transition table, versions, `If-Match`); until
then any status may follow any other, and setting the status a ticket already has changes
nothing and logs nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from .events import PlannedEvent
from .fields import FieldSet, FieldsRequired, missing_on_resolve
from .links import close_collaborators
from .planner import TicketRef
from .replies import TicketNotFound
from .statements import TICKETS, CoreWriteStatements
from .store import append_events
from .timeline import status_changed
from .timers import Timelines

# What an agent may set; `merged` is the merge operation's, not a plain status.
SETTABLE = ("new", "open", "pending", "on_hold", "resolved", "closed")


def write_status(connection: Connection, ticket_ref: str, status: str,
                 now: datetime, timelines: Timelines | None = None,
                 fields: FieldSet | None = None) -> tuple[str, bool]:
    """Set the ticket's status in the caller's transaction: (ticket id, whether it changed).

    Resolving checks `fields`' `required: on_resolve` fields of the ticket's desk: any
    without a value raise FieldsRequired naming them."""
    is_number = ticket_ref.isascii() and ticket_ref.isdigit() and len(ticket_ref) <= 18
    condition = (TICKETS.c.number == int(ticket_ref)) if is_number else (
        TICKETS.c.id == ticket_ref)
    ticket: Any = connection.execute(select(TICKETS).where(condition)).first()
    if ticket is None:
        raise TicketNotFound(ticket_ref)
    if ticket.status == status:
        return ticket.id, False
    if status == "resolved" and fields is not None:
        missing = missing_on_resolve(ticket, fields)
        if missing:
            raise FieldsRequired(missing)
    connection.execute(update(TICKETS).where(TICKETS.c.id == ticket.id)
                       .values(status=status, updated_at=now))
    # A primary closed or merged closes its collaborator tickets with it (links.py).
    collaborators = close_collaborators(connection, ticket.id, status, now)
    events = [_updated(ticket, status, "agent", now, {})]
    events += [_updated(c, "closed", "system", now,
                        {"reason": f"primary ticket {ticket.number} {status}",
                         "primary_ticket_id": ticket.id}) for c in collaborators]
    append_events(CoreWriteStatements(connection), events)
    # Resolved: the resolution clock stops, a step done when resolved completes.
    timelines = timelines if timelines is not None else Timelines()
    status_changed(connection, ticket.id, status, now, timelines)
    for collaborator in collaborators:
        status_changed(connection, collaborator.id, "closed", now, timelines)
    return ticket.id, True


def _updated(ticket: Any, status: str, actor: str, now: datetime,
             extra: dict[str, Any]) -> PlannedEvent:
    ref = TicketRef(id=ticket.id, number=ticket.number, status=status,
                    customer_id=ticket.customer_id, channel=ticket.channel, desk=ticket.desk)
    return PlannedEvent(
        "ticket.updated", now, ref, ticket.customer_id, actor,
        {"status": status, "previous_status": ticket.status,
         "changes": {"status": [ticket.status, status]}, "channel": ticket.channel,
         "account": ticket.account, "conversation_id": ticket.conversation_id,
         "subject": ticket.subject, **extra})
