"""Telling first-contact agents (首问负责人) of their tickets' customer messages, from the event
log rather than the persist path.

A round reads the events after the `first_contact_notified` counter row (ids become visible in
order: see store.append_events), notifies the first-contact agent of each ticket that got a
customer's `message.created`, and moves the counter, in one write transaction: each message
is told once, across restarts. The assigner task runs it (assigner.py). The first round after
this counter is missing starts at the end of the log (nothing old is told).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from .notifications import notify
from .statements import COUNTERS, EVENTS, TICKETS

NOTIFIED = "first_contact_notified"
BATCH = 500


def pending_query() -> Any:
    """(the counter, the last event id): a round has work when they differ."""
    last = select(func.max(EVENTS.c.id)).scalar_subquery()
    counter = select(COUNTERS.c.value).where(COUNTERS.c.name == NOTIFIED).scalar_subquery()
    return select(counter, last)


def notify_customer_messages(connection: Connection, now: datetime,
                             limit: int = BATCH) -> int:
    """One round in the caller's write transaction: the notifications written."""
    query = select(COUNTERS.c.value).where(COUNTERS.c.name == NOTIFIED)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()  # two replicas never tell the same message twice
    seen = connection.execute(query).scalar()
    if seen is None:
        end = connection.execute(select(func.max(EVENTS.c.id))).scalar() or 0
        connection.execute(COUNTERS.insert().values(name=NOTIFIED, value=end))
        return 0
    rows = connection.execute(select(EVENTS.c.id, EVENTS.c.type, EVENTS.c.actor,
                                     EVENTS.c.ticket_id, EVENTS.c.data)
                              .where(EVENTS.c.id > seen).order_by(EVENTS.c.id)
                              .limit(limit)).all()
    if not rows:
        return 0
    messages = [r for r in rows if r.type == "message.created" and r.actor == "customer"
                and r.ticket_id is not None]
    owners = dict(connection.execute(select(TICKETS.c.id, TICKETS.c.first_contact_agent_id)
                                     .where(TICKETS.c.id.in_(sorted({r.ticket_id
                                                                     for r in messages})),
                                            TICKETS.c.first_contact_agent_id.is_not(None)))
                  .all()) if messages else {}
    written = 0
    for row in messages:
        owner = owners.get(row.ticket_id)
        if owner is not None:
            data = row.data or {}
            written += len(notify(connection, [owner], row.ticket_id, "customer_message", {
                "ticket_number": data.get("ticket_number"),
                "message_id": data.get("message_id"), "channel": data.get("channel")}, now))
    connection.execute(update(COUNTERS).where(COUNTERS.c.name == NOTIFIED)
                       .values(value=rows[-1].id))
    return written
