"""Assignment in storage (issue 17): the candidates of a skill group read in the write
transaction, the one helper that records an assignment, the automatic round, a claim, the
queue's next ticket and a supervisor's assignment.

The decisions are assignment.py's (pure); this module reads what they need and writes what
they decide, in the caller's transaction, so a decision and its write see the same loads.

Concurrency. Every assignment is a conditional update (`… WHERE assignee_id IS NULL`, or the
assignee read): of two claimers exactly one updates a row. Locks are taken in one order, agents
(by id, `FOR UPDATE` on PostgreSQL) before tickets, so claimers, the assigner and the other
writers (which lock tickets only) cannot deadlock; a claimer's queue read is `FOR UPDATE SKIP
LOCKED` (a ticket another claimer holds is passed, not waited for). SQLite writes one
transaction at a time (`BEGIN IMMEDIATE`, db.WRITE).

History. There is no history table yet: an assignment is a `ticket.updated` event with
`changes: {assignee_id: [before, after]}` and `assignment` (Choice.history(): strategy,
candidates, why each other one was passed over) — written by `record_assignment` alone, so an
audit-history table can take it from there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.engine import Connection

from .agents_db import AGENTS
from .assignment import PRIORITY_RANK, Candidate, Choice, Strategy, capacity_on, choose
from .events import PlannedEvent
from .lifecycle import set_status
from .notifications import notify
from .replies import TicketNotFound
from .scope import current
from .statements import MESSAGES, TICKETS, CoreWriteStatements
from .threads import TicketRef
from .timeline import TicketWork, ticket_condition
from .timers import Timelines

BATCH = 200  # waiting tickets an automatic round looks at
NEXT_LOOKAHEAD = 50  # waiting tickets `…/next` looks through for one on a channel with room
SYSTEM_ACTOR = "system:assigner"


class AssignmentRefused(Exception):
    """Why an assignment cannot happen; `code` is the API's error code."""

    code = "assignment_refused"


class AlreadyAssigned(AssignmentRefused):
    code = "already_assigned"

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


class AtCapacity(AssignmentRefused):
    code = "at_capacity"

    def __init__(self, channel: str, load: int, capacity: int) -> None:
        super().__init__(channel)
        self.channel, self.load, self.capacity = channel, load, capacity


class NotAMember(AssignmentRefused):
    code = "not_a_member"

    def __init__(self, group: str | None) -> None:
        super().__init__(group)
        self.group = group


class TicketDone(AssignmentRefused):
    code = "ticket_closed"

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class AgentUnknown(AssignmentRefused):
    code = "agent_not_found"


class AgentNotOnDesk(AssignmentRefused):
    code = "agent_not_on_desk"


def strategy_of(timelines: Timelines, group: str | None) -> Strategy:
    value = timelines.strategies.get(group or "", "round_robin")
    return value if value in ("round_robin", "least_loaded", "claim") else "round_robin"  # type: ignore[return-value]


def queue_order() -> list[Any]:
    """Highest priority, then the longest wait (since `waiting_since`, else `created_at`)."""
    rank = case(PRIORITY_RANK, value=TICKETS.c.priority, else_=PRIORITY_RANK["normal"])
    return [rank, func.coalesce(TICKETS.c.waiting_since, TICKETS.c.created_at), TICKETS.c.id]


def waiting(load_statuses: Sequence[str]) -> list[Any]:
    """Conditions of a ticket in its group's queue: unassigned, in a load status."""
    return [TICKETS.c.assignee_id.is_(None), TICKETS.c.status.in_(list(load_statuses)),
            TICKETS.c.skill_group.is_not(None)]


def _pg(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def lock_agents(connection: Connection, agent_ids: Iterable[str]) -> dict[str, Any]:
    """These agents' rows, locked in id order on PostgreSQL (agents before tickets)."""
    ids = sorted(set(agent_ids))
    if not ids:
        return {}
    query = select(AGENTS).where(AGENTS.c.id.in_(ids)).order_by(AGENTS.c.id)
    if _pg(connection):
        query = query.with_for_update()
    return {row.id: row for row in connection.execute(query)}


def members(connection: Connection, groups: Iterable[str]) -> dict[str, Any]:
    """The agents of any of these groups, locked (skill groups are a JSON list: agents are
    hundreds, filtered here)."""
    wanted = set(groups)
    ids = [row.id for row in connection.execute(select(AGENTS.c.id, AGENTS.c.skill_groups))
           if wanted & set(row.skill_groups or [])]
    return lock_agents(connection, ids)


def loads(connection: Connection, agent_ids: Iterable[str],
          load_statuses: Sequence[str]) -> dict[tuple[str, str], int]:
    """(agent, channel) → tickets assigned to the agent in the load statuses."""
    ids = sorted(set(agent_ids))
    if not ids:
        return {}
    rows = connection.execute(
        select(TICKETS.c.assignee_id, TICKETS.c.channel, func.count())
        .where(TICKETS.c.assignee_id.in_(ids), TICKETS.c.status.in_(list(load_statuses)))
        .group_by(TICKETS.c.assignee_id, TICKETS.c.channel))
    return {(a, c): int(n) for a, c, n in rows}


def candidate(agent: Any, group: str | None, channel: str, load: dict[tuple[str, str], int],
              timelines: Timelines) -> Candidate:
    return Candidate(
        agent_id=agent.id, member=group is not None and group in (agent.skill_groups or []),
        presence=agent.presence,
        capacity=capacity_on(channel, agent.capacity or {}, timelines.capacities.get(
            group or "", {})),
        load=load.get((agent.id, channel), 0), last_assigned_at=agent.last_assigned_at)


def _stamp(connection: Connection, now: datetime) -> datetime:
    """`last_assigned_at` for the next assignment: now, or just after the latest one (a
    frozen test clock, or several in one round, still give round robin a strict order)."""
    latest = connection.execute(select(AGENTS.c.last_assigned_at).where(
        AGENTS.c.last_assigned_at.is_not(None)).order_by(
        AGENTS.c.last_assigned_at.desc()).limit(1)).scalar()
    return now if latest is None or latest < now else latest + timedelta(microseconds=1)


def _ref(row: Any, desk: str | None = None) -> TicketRef:
    return TicketRef(id=row.id, number=row.number, status=row.status,
                     customer_id=row.customer_id, channel=row.channel,
                     desk=desk if desk is not None else row.desk)


def record_assignment(connection: Connection, ticket: Any, agent_id: str | None,
                      now: datetime, actor: str, timelines: Timelines, *,
                      history: dict[str, Any], reason: str, acknowledge: bool = False,
                      extra: Sequence[Any] = (), notify_actor: str | None = None,
                      notify_first_contact: bool = True) -> list[PlannedEvent] | None:
    """Assign `ticket` (a row as read) to `agent_id` (None: back to its group's queue) if its
    assignee is still the one read: the events to append, or None when another writer changed
    it first. A `new` ticket becomes `open`; the first agent becomes its first contact; a
    claim or a supervisor's assignment acknowledges it; the new assignee and the first-contact
    agent are notified (not the agent who did it, `notify_actor`)."""
    before = ticket.assignee_id
    held = TICKETS.c.assignee_id.is_(None) if before is None else \
        TICKETS.c.assignee_id == before
    values: dict[str, Any] = {
        "assignee_id": agent_id, "assigned_at": now if agent_id is not None else None,
        "waiting_since": None if agent_id is not None else now, "updated_at": now,
        "version": TICKETS.c.version + 1}
    first_contact = ticket.first_contact_agent_id
    if agent_id is not None and first_contact is None:
        values["first_contact_agent_id"] = agent_id
    result = connection.execute(update(TICKETS).where(TICKETS.c.id == ticket.id, held, *extra)
                                .values(**values))
    if result.rowcount != 1:
        return None
    if agent_id is not None:
        connection.execute(update(AGENTS).where(AGENTS.c.id == agent_id).values(
            last_assigned_at=_stamp(connection, now)))
    events = [PlannedEvent("ticket.updated", now, _ref(ticket), ticket.customer_id, actor, {
        "assignee_id": agent_id, "reason": reason,
        "changes": {"assignee_id": [before, agent_id]}, "assignment": history})]
    if agent_id is not None and ticket.status == "new":
        opened, _ = set_status(connection, ticket, "open", now, actor, timelines.lifecycle,
                               {"reason": "assigned"})
        events.extend(opened)
    if acknowledge:
        work = TicketWork.lock(connection, TICKETS.c.id == ticket.id, timelines, events)
        if work is not None:
            work.now = now
            work.acknowledge(now, actor)
            work.save(now)
    payload = {"ticket_number": ticket.number, "assignee_id": agent_id,
               "previous_assignee_id": before, "by": actor, "reason": reason}
    if agent_id is not None and agent_id != notify_actor:
        notify(connection, [agent_id], ticket.id, "assigned", payload, now)
    if notify_first_contact and first_contact is not None \
            and first_contact not in (agent_id, notify_actor):
        notify(connection, [first_contact], ticket.id, "reassigned", payload, now)
    return events


def append(connection: Connection, events: list[PlannedEvent]) -> None:
    from .store import append_events  # the store imports the planner, which imports us

    append_events(CoreWriteStatements(connection), events)


# ---- the automatic round ---------------------------------------------------------------------

def has_waiting_query(timelines: Timelines, load_statuses: Sequence[str]) -> Any:
    """Whether a ticket waits in a group with an automatic strategy (a cheap read)."""
    query = select(TICKETS.c.id).where(*waiting(load_statuses))
    claim_groups = sorted(g for g, s in timelines.strategies.items() if s == "claim")
    if claim_groups:
        query = query.where(TICKETS.c.skill_group.not_in(claim_groups))
    return query.limit(1)


def assign_waiting(connection: Connection, now: datetime, timelines: Timelines,
                   load_statuses: Sequence[str], limit: int = BATCH) -> int:
    """One round: waiting tickets of automatic groups, highest priority then longest wait,
    each to its group's strategy's choice among members present with room on its channel.
    The number assigned. A ticket nobody can take waits; a newer one of the same group and
    channel never goes before it (same candidates, taken in queue order)."""
    query = select(TICKETS).where(*waiting(load_statuses))
    claim_groups = sorted(g for g, s in timelines.strategies.items() if s == "claim")
    if claim_groups:
        query = query.where(TICKETS.c.skill_group.not_in(claim_groups))
    tickets = connection.execute(query.order_by(*queue_order()).limit(limit)).all()
    if not tickets:
        return 0
    agents = members(connection, {t.skill_group for t in tickets})
    load = loads(connection, agents, load_statuses)
    assigned = 0
    events: list[PlannedEvent] = []
    for ticket in tickets:
        group, strategy = ticket.skill_group, strategy_of(timelines, ticket.skill_group)
        pool = [a for a in agents.values() if group in (a.skill_groups or [])]
        choice = choose(strategy, [candidate(a, group, ticket.channel, load, timelines)
                                   for a in pool])
        if choice.agent_id is None:
            continue
        written = record_assignment(
            connection, ticket, choice.agent_id, now, SYSTEM_ACTOR, timelines,
            history=choice.history(), reason=strategy,
            extra=[TICKETS.c.status.in_(list(load_statuses)),
                   TICKETS.c.skill_group == group])
        if written is None:
            continue  # claimed, moved or closed meanwhile
        events.extend(written)
        key = (choice.agent_id, ticket.channel)
        load[key] = load.get(key, 0) + 1
        agents[choice.agent_id] = _with_last(agents[choice.agent_id], connection)
        assigned += 1
    append(connection, events)
    return assigned


def _with_last(agent: Any, connection: Connection) -> Any:
    return connection.execute(select(AGENTS).where(AGENTS.c.id == agent.id)).one()


# ---- claims and supervisors ------------------------------------------------------------------

def _ticket(connection: Connection, ticket_ref: str) -> Any:
    row = connection.execute(select(TICKETS).where(ticket_condition(ticket_ref))).first()
    if row is None:
        raise TicketNotFound(ticket_ref)
    if row.status in ("closed", "merged"):
        raise TicketDone(row.status)
    return row


def _holder(connection: Connection, ticket_id: str) -> str:
    return str(connection.execute(select(TICKETS.c.assignee_id).where(
        TICKETS.c.id == ticket_id)).scalar() or "")


def claim_ticket(connection: Connection, ticket_ref: str, agent_id: str, now: datetime,
                 timelines: Timelines, load_statuses: Sequence[str], actor: str) -> str:
    """`POST …/claim`: the ticket id. Refused: held by another (AlreadyAssigned), not of a
    group of the agent's (NotAMember), no room on its channel (AtCapacity)."""
    agent = lock_agents(connection, [agent_id]).get(agent_id)
    if agent is None:
        raise AgentUnknown(agent_id)
    ticket = _ticket(connection, ticket_ref)
    if ticket.assignee_id == agent_id:
        return str(ticket.id)  # claimed already: nothing changes
    if ticket.assignee_id is not None:
        raise AlreadyAssigned(ticket.assignee_id)
    found = candidate(agent, ticket.skill_group, ticket.channel,
                      loads(connection, [agent_id], load_statuses), timelines)
    if not found.member:
        raise NotAMember(ticket.skill_group)
    if found.capacity is not None and found.load >= found.capacity:
        raise AtCapacity(ticket.channel, found.load, found.capacity)
    history = Choice(strategy_of(timelines, ticket.skill_group), agent_id, [agent_id]).history()
    written = record_assignment(connection, ticket, agent_id, now, actor, timelines,
                                history={**history, "by": "claim"}, reason="claim",
                                acknowledge=True, notify_actor=agent_id)
    if written is None:
        raise AlreadyAssigned(_holder(connection, ticket.id))
    append(connection, written)
    return str(ticket.id)


def next_ticket(connection: Connection, group: str, agent_id: str, now: datetime,
                timelines: Timelines, load_statuses: Sequence[str], actor: str) -> str | None:
    """`POST /api/v1/queues/{group}/next`: claim the best waiting ticket of the group on a
    channel where the agent has room; None when the queue is empty (AtCapacity when it is
    not, but every waiting ticket is on a channel the agent is full on)."""
    agent = lock_agents(connection, [agent_id]).get(agent_id)
    if agent is None:
        raise AgentUnknown(agent_id)
    if group not in (agent.skill_groups or []):
        raise NotAMember(group)
    load = loads(connection, [agent_id], load_statuses)
    query = (select(TICKETS).where(*waiting(load_statuses), TICKETS.c.skill_group == group)
             .order_by(*queue_order()).limit(NEXT_LOOKAHEAD))
    if _pg(connection):
        query = query.with_for_update(skip_locked=True)  # another claimer's: pass it
    full: AtCapacity | None = None
    for ticket in connection.execute(query).all():
        found = candidate(agent, group, ticket.channel, load, timelines)
        if found.capacity is not None and found.load >= found.capacity:
            full = full or AtCapacity(ticket.channel, found.load, found.capacity)
            continue
        history = Choice(strategy_of(timelines, group), agent_id, [agent_id]).history()
        written = record_assignment(connection, ticket, agent_id, now, actor, timelines,
                                    history={**history, "by": "next"}, reason="claim",
                                    acknowledge=True, notify_actor=agent_id)
        if written is None:
            continue  # SQLite never gets here; PostgreSQL skipped locked rows already
        append(connection, written)
        return str(ticket.id)
    if full is not None:
        raise full
    return None


def set_assignee(connection: Connection, ticket_ref: str, agent_id: str | None,
                 now: datetime, timelines: Timelines, load_statuses: Sequence[str],
                 actor: str, by_agent: str | None) -> str:
    """`PUT …/assignee` by a supervisor or admin: any agent of the ticket's desk, capacity and
    presence notwithstanding (recorded in the history); None puts it back in its queue."""
    agents = lock_agents(connection, [agent_id] if agent_id else [])
    if agent_id is not None and agent_id not in agents:
        raise AgentUnknown(agent_id)
    ticket = _ticket(connection, ticket_ref)
    if ticket.assignee_id == agent_id:
        return str(ticket.id)
    if agent_id is None:
        history: dict[str, Any] = {"strategy": None, "agent_id": None, "candidates": [],
                                   "passed_over": {}, "by": "supervisor"}
    else:
        agent = agents[agent_id]
        if ticket.desk is not None and ticket.desk not in (agent.desks or []):
            raise AgentNotOnDesk(ticket.desk)
        found = candidate(agent, ticket.skill_group, ticket.channel,
                          loads(connection, [agent_id], load_statuses), timelines)
        history = {**Choice(strategy_of(timelines, ticket.skill_group), agent_id,
                            [agent_id]).history(), "by": "supervisor",
                   "overridden": found.passed_because()}  # e.g. at_capacity, offline
    written = record_assignment(connection, ticket, agent_id, now, actor, timelines,
                                history=history, reason="supervisor",
                                acknowledge=agent_id is not None, notify_actor=by_agent)
    if written is None:
        raise AlreadyAssigned(_holder(connection, ticket.id))
    append(connection, written)
    return str(ticket.id)


def replied(connection: Connection, message_id: str, agent_id: str | None, now: datetime,
            timelines: Timelines, actor: str) -> str:
    """After an agent's public reply, in its transaction: the replying agent becomes the
    first contact if there is none, and the ticket is acknowledged (once). The message id."""
    ticket_id = connection.execute(select(MESSAGES.c.ticket_id).where(
        MESSAGES.c.id == message_id)).scalar()
    if ticket_id is None:
        return message_id
    if agent_id is not None:
        connection.execute(update(TICKETS).where(
            TICKETS.c.id == ticket_id, TICKETS.c.first_contact_agent_id.is_(None))
            .values(first_contact_agent_id=agent_id))
    events: list[PlannedEvent] = []
    work = TicketWork.lock(connection, TICKETS.c.id == ticket_id, timelines, events)
    if work is not None and work.acknowledged_at is None:
        work.now = now
        work.acknowledge(now, actor)
        work.save(now)
        append(connection, events)
    return message_id


# ---- list filters ----------------------------------------------------------------------------

def assignment_filters(values: dict[str, str | None], problems: dict[str, str]) -> None:
    """`?assignee=me|none|<agent id>` and `?first_contact=me` of `GET /api/v1/tickets`, in
    place: `me` becomes the caller's agent id, `none` the empty string (unassigned)."""
    me = current().agent_id
    assignee, first_contact = values.get("assignee"), values.get("first_contact")
    if assignee == "me" or first_contact == "me":
        if me is None:
            name = "assignee" if assignee == "me" else "first_contact"
            problems[name] = "`me` needs an agent's token (the admin token is no agent)"
    if assignee is not None:
        values["assignee"] = me if assignee == "me" else "" if assignee == "none" else assignee
        if "\x00" in assignee or len(assignee) > 64:
            problems["assignee"] = "me, none or an agent id"
    if first_contact is not None:
        if first_contact != "me":
            problems["first_contact"] = "only `me`"
        values["first_contact"] = me
