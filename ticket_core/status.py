"""An agent's status change (`PATCH /api/v1/tickets/{id}`), with its `ticket.updated`.

The transition table and versions are lifecycle.py's: a status the table does not allow
raises `InvalidTransition` (409), an `If-Match` version other than the ticket's raises
`VersionMismatch` (412), resolving without the desk's `required: on_resolve` fields raises
`FieldsRequired` (422), all before anything is written; setting the status a ticket already
has changes nothing and logs nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from .fields import FieldSet, FieldsRequired, missing_on_resolve
from .lifecycle import VersionMismatch, check_transition, set_status
from .notifications import notify
from .replies import TicketNotFound
from .satisfaction import request_satisfaction
from .statements import TICKETS, CoreWriteStatements
from .store import append_events
from .timeline import status_changed, ticket_condition
from .timers import Timelines


def write_status(connection: Connection, ticket_ref: str, status: str,
                 now: datetime, timelines: Timelines | None = None,
                 if_match: int | None = None,
                 fields: FieldSet | None = None,
                 by_agent: str | None = None) -> tuple[str, bool]:
    """Set the ticket's status in the caller's transaction: (ticket id, whether it changed)."""
    timelines = timelines if timelines is not None else Timelines()
    query = select(TICKETS).where(ticket_condition(ticket_ref))
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()  # the version compared is the one overwritten
    ticket: Any = connection.execute(query).first()
    if ticket is None:
        raise TicketNotFound(ticket_ref)
    if if_match is not None and ticket.version != if_match:
        raise VersionMismatch(ticket.version)
    check_transition(ticket.status, status)
    if ticket.status == status:
        return ticket.id, False
    if status == "resolved" and fields is not None:
        missing = missing_on_resolve(ticket, fields)
        if missing:
            raise FieldsRequired(missing)
    events, collaborators = set_status(connection, ticket, status, now, "agent",
                                       timelines.lifecycle)
    if status == "resolved":  # with `on_resolve`, one satisfaction request
        events += request_satisfaction(connection, ticket, now, timelines.satisfaction,
                                       automatic=False)
    append_events(CoreWriteStatements(connection), events)
    if ticket.first_contact_agent_id not in (None, by_agent):  # 首问负责人 hears of it
        notify(connection, [ticket.first_contact_agent_id], ticket.id, "status_changed",
               {"ticket_number": ticket.number, "status": status,
                "previous_status": ticket.status, "by_agent": by_agent}, now)
    # Resolved: the resolution clock stops, a step done when resolved completes.
    status_changed(connection, ticket.id, status, now, timelines)
    for collaborator in collaborators:
        status_changed(connection, collaborator.id, "closed", now, timelines)
    return ticket.id, True
