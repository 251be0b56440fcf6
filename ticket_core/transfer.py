"""Transfer (转派, issue 17): a ticket to another agent, skill group or desk, with a mandatory
note stored as an internal note linked to the transfer (`ticket.transferred` names it).

To an agent: assigned to them where it is (they must work its desk; capacity is not checked,
as a supervisor's assignment). To a skill group or a desk (its `default_skill_group`): the
ticket moves there unassigned, at the back of that group's queue (`waiting_since`), and that
group's strategy assigns it (the caller runs an assigner round right after). The first-contact
agent, the previous assignee and the new one are notified; the first contact stays.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from .agents_db import AGENTS
from .assigning import AgentNotOnDesk, AgentUnknown, TicketDone, append, record_assignment
from .events import PlannedEvent
from .notes import write_note
from .notifications import notify
from .replies import TicketNotFound
from .sla import retarget
from .statements import TICKETS
from .threads import TicketRef
from .timeline import ticket_condition
from .timers import Timelines


class TargetInvalid(ValueError):
    """The transfer's `to` names a desk or group not in the rules in force."""


def transfer_ticket(connection: Connection, ticket_ref: str, to: dict[str, str], note: str,
                    now: datetime, timelines: Timelines, actor: str,
                    by_agent: str | None) -> tuple[str, bool]:
    """In the caller's transaction: (ticket id, whether it waits for its new group's
    strategy)."""
    query = select(TICKETS).where(ticket_condition(ticket_ref))
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    ticket: Any = connection.execute(query).first()
    if ticket is None:
        raise TicketNotFound(ticket_ref)
    if ticket.status in ("closed", "merged"):
        raise TicketDone(ticket.status)
    desk, group, agent_id = ticket.desk, ticket.skill_group, None
    if "agent_id" in to:
        agent = connection.execute(select(AGENTS).where(AGENTS.c.id == to["agent_id"])).first()
        if agent is None:
            raise AgentUnknown(to["agent_id"])
        if desk is not None and desk not in (agent.desks or []):
            raise AgentNotOnDesk(desk)
        agent_id = agent.id
    elif "skill_group" in to:
        group = to["skill_group"]
        if timelines.groups is not None:
            if group not in timelines.groups:
                raise TargetInvalid(f"skill group {group} is not in the rules in force")
            desk = timelines.groups[group]
    else:
        desk = to["desk"]
        if timelines.desks is not None and desk not in timelines.desks:
            raise TargetInvalid(f"desk {desk} is not in the rules in force")
        group = timelines.default_group.get(desk)
    note_id = write_note(connection, ticket.id, note, [], actor, now)
    moved = (desk, group) != (ticket.desk, ticket.skill_group)
    if moved:
        connection.execute(update(TICKETS).where(TICKETS.c.id == ticket.id).values(
            desk=desk, skill_group=group, updated_at=now))
        if desk != ticket.desk:  # the desk's policy and calendar may differ (sla.py)
            retarget(connection, ticket.id, now, timelines)
    row: Any = connection.execute(select(TICKETS).where(TICKETS.c.id == ticket.id)).one()
    events = [PlannedEvent("ticket.transferred", now, TicketRef(
        id=row.id, number=row.number, status=row.status, customer_id=row.customer_id,
        channel=row.channel, desk=desk), row.customer_id, actor, {
        "reason": "transfer", "note_id": note_id,
        "from": {"desk": ticket.desk, "skill_group": ticket.skill_group,
                 "assignee_id": ticket.assignee_id},
        "to": {"desk": desk, "skill_group": group, "assignee_id": agent_id}},
        # The history keeps the transfer's note (agent-only); the event stream never does.
        before={"desk": ticket.desk, "skill_group": ticket.skill_group,
                "assignee_id": ticket.assignee_id},
        after={"desk": desk, "skill_group": group, "assignee_id": agent_id,
               "note_id": note_id, "note": note})]
    if agent_id != row.assignee_id or (agent_id is None and moved):
        history: dict[str, Any] = {"strategy": None, "agent_id": agent_id,
                                   "candidates": [], "passed_over": {}, "by": "transfer",
                                   "note_id": note_id}
        written = record_assignment(connection, row, agent_id, now, actor, timelines,
                                    history=history, reason="transfer",
                                    notify_actor=by_agent, notify_first_contact=False)
        events.extend(written or [])
    payload = {"ticket_number": row.number, "note_id": note_id, "by": actor,
               "from": {"desk": ticket.desk, "skill_group": ticket.skill_group},
               "to": {"desk": desk, "skill_group": group, "agent_id": agent_id}}
    notify(connection, [a for a in (row.first_contact_agent_id, ticket.assignee_id)
                        if a not in (by_agent, agent_id)], row.id, "transferred", payload, now)
    append(connection, events)
    return str(row.id), agent_id is None
