"""One ticket per delivery: the linked tickets a decision adds, their links, and closing them.

A `multi` decision (多服务台) makes a ticket for each of its deliveries in the transaction that
stores the message: the `owner`'s is the customer-facing one, each `copy` and `collaborator`
delivery gets a linked internal ticket (`customer_facing: false`, `primary_ticket_id` the
owner's, relation "multi"). A `primary_secondary` decision gives each `collaborator` delivery a
linked internal ticket at once (relation "collaborator"), closed with the primary; its
`overflow` deliveries stay timers on the primary (timers.py). Other modes make one ticket.

The message is stored once, on the customer-facing ticket, and shown on each linked one (the
agent API reads the messages of `primary_ticket_id`). Thread hints never lead to a linked
ticket (statements.py), so a follow-up joins the customer-facing ticket and makes no more.
Linked tickets carry no SLA, escalation or timers: the customer's clock runs on the ticket that
answers them. A reply on a linked ticket is refused (`NotCustomerFacing`): it would reach the
customer from a desk that is not theirs.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Connection

from intake.message import RouteDecision, RouteDelivery

from .schemas import DONE_STATUSES, TicketLink
from .statements import TICKETS

LINKING_MODES: dict[str, tuple[str, ...]] = {
    "multi": ("copy", "collaborator"),
    "primary_secondary": ("collaborator",),
}
RELATION: dict[str, Literal["multi", "collaborator"]] = {
    "multi": "multi", "primary_secondary": "collaborator"}
# What closes a primary's collaborator tickets with it.
CLOSES_COLLABORATORS = ("closed", "merged")


class NotCustomerFacing(LookupError):
    """A reply asked of a linked (internal) ticket: it would reach the customer."""


def linked_deliveries(route: RouteDecision | None,
                      owner: RouteDelivery | None) -> list[RouteDelivery]:
    """The deliveries of `route` that get a linked internal ticket beside the owner's."""
    if route is None or route.mode not in LINKING_MODES:
        return []
    roles = LINKING_MODES[route.mode]
    return [d for d in route.deliveries if d is not owner and d.role in roles]


def linked_ticket_row(owner_row: dict[str, Any], delivery: RouteDelivery, mode: str,
                      ticket_id: str, created_at: datetime) -> dict[str, Any]:
    """The row of a linked ticket: the owner's, on the delivery's desk, internal, no clock."""
    return {
        **owner_row, "id": ticket_id, "number": None, "desk": delivery.desk,
        "skill_group": delivery.skill_group, "created_at": created_at,
        "updated_at": created_at, "sla": None, "escalation": None, "satisfaction": None,
        "role": delivery.role, "customer_facing": False,
        "primary_ticket_id": owner_row["id"], "link_relation": RELATION[mode]}


def thread_of(row: Any) -> str:
    """The ticket whose messages this one shows: its primary's for a linked ticket."""
    return str(row.primary_ticket_id or row.id)


async def read_links(conn: Any, rows: Iterable[Any]) -> dict[str, list[TicketLink]]:
    """Each ticket's links: the other tickets of its group (the customer-facing ticket and the
    ones linked to it), as they are now (their desk after a transfer)."""
    groups = sorted({thread_of(r) for r in rows})
    if not groups:
        return {}
    found = (await conn.execute(
        select(TICKETS.c.id, TICKETS.c.number, TICKETS.c.desk, TICKETS.c.role,
               TICKETS.c.primary_ticket_id, TICKETS.c.link_relation)
        .where(or_(TICKETS.c.id.in_(groups), TICKETS.c.primary_ticket_id.in_(groups)))
        .order_by(TICKETS.c.number))).all()
    members: dict[str, list[Any]] = {}
    for member in found:
        members.setdefault(thread_of(member), []).append(member)
    links: dict[str, list[TicketLink]] = {}
    for tickets in members.values():
        for ticket in tickets:
            links[ticket.id] = [
                # The relation binding a pair is the linked one's.
                TicketLink(ticket_id=other.id, number=other.number, desk=other.desk,
                           role=other.role,
                           relation=other.link_relation or ticket.link_relation)
                for other in tickets if other.id != ticket.id]
    return links


def close_collaborators(connection: Connection, primary_id: str, status: str,
                        now: datetime) -> list[Any]:
    """A primary closed or merged closes its open collaborator tickets in the caller's
    transaction; returns the rows as they were (the caller writes their events)."""
    if status not in CLOSES_COLLABORATORS:
        return []
    rows = connection.execute(
        select(TICKETS).where(TICKETS.c.primary_ticket_id == primary_id,
                              TICKETS.c.link_relation == "collaborator",
                              TICKETS.c.status.not_in(DONE_STATUSES))
        .order_by(TICKETS.c.id).with_for_update()).all()
    if rows:
        connection.execute(update(TICKETS).where(TICKETS.c.id.in_([r.id for r in rows]))
                           .values(status="closed", updated_at=now,
                                   version=TICKETS.c.version + 1))
    return list(rows)
