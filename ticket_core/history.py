"""The audit history: an append-only row per change of a ticket or customer, and its pages.

Rows are written where event rows are written, by `store.append_events` (both write paths:
the persist plan's events and every other write), so a change that writes its event is in the
history without a line of its own. A row is keyed by its event's id (commit order) and holds
`at` (the event's domain time), `actor`, `action` (the event type), `before`, `after` and
`trace_id`:

- `actor`: the event's own when it names someone (`customer`, `connector:<channel>`,
  `system:<rule>`, `agent:<id> token:<id>`); an event written as the generic `agent` or
  `admin` gets the request's principal (`scope.Principal.actor`: agent and token id, or
  `admin`), and a bare `system` becomes `system:<the event type>` unless the caller named
  the rule or timer (`PlannedEvent.by`).
- `before`/`after`: the caller's (`PlannedEvent.before`/`after`) when given; else from the
  event's `changes` (`{key: [before, after]}`) or a transfer's `from`/`to`, with the why
  (`reason`, an assignment's strategy and candidates) beside the new values; else no
  `before` and the event's data as `after` (created tickets, messages, SLA and escalation
  events, reminders).
- Every event type but call progress (`call.*`: the screen pop's, no change of a ticket or
  customer) makes a row, so later event types land here by themselves. Inbound messages are
  included (`message.created` with `direction: in`, "the customer wrote"), without their text:
  the messages are on the ticket; notes carry their text (history is for agents only).

Nothing updates or deletes a row (PostgreSQL and SQLite triggers refuse it, migration 0015).
A ticket's history includes that of the tickets merged into it (`merged_into`, at any depth);
a customer's holds the entries of their tickets in the caller's scope and the customer's own
changes. Both read oldest first (ascending id: a page never shifts as new rows arrive).
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncConnection

from . import db
from .events import PlannedEvent
from .scope import SYSTEM, Principal, current, visible_tickets, where_visible
from .statements import CUSTOMERS, TICKETS

HISTORY = db.History.__table__
# Call progress (ringing, answered, ended) is the screen pop's: no ticket or customer changes.
NOT_HISTORY = frozenset({"call.ringing", "call.answered", "call.ended"})
# Event actors that name no one: the request's principal says who (see `actor_of`).
GENERIC_ACTORS = frozenset({"agent", "admin"})
# What an event's data says about why, kept in `after` beside the changed values.
WHY_KEYS = ("reason", "assignment", "note_id", "note")
ACTOR_LENGTH = 160
TRACE_LENGTH = 128
# A trace id a caller may hand in (`X-Trace-Id`): printable, no spaces, short.
_TRACE_ID = re.compile(r"[A-Za-z0-9._:/-]{1,128}")


@dataclass(frozen=True, slots=True)
class Author:
    """Who a write transaction works for and under which trace: taken in the request's (or
    consumer's) task, carried to the SQLite writer thread, which does not see its context."""

    principal: Principal
    trace_id: str | None

    @classmethod
    def capture(cls) -> Author:
        trace = structlog.contextvars.get_contextvars().get("trace_id")
        return cls(current(), trace if isinstance(trace, str) else None)


AUTHOR: ContextVar[Author | None] = ContextVar("intake_history_author", default=None)


@contextlib.contextmanager
def writing_for(author: Author) -> Iterator[None]:
    """Run a write transaction's work for `author` (TicketStore does this around each one)."""
    token = AUTHOR.set(author)
    try:
        yield
    finally:
        AUTHOR.reset(token)


def request_trace_id(given: str | None) -> str:
    """A request's trace id: the caller's `X-Trace-Id` when it is a sane one, else a new one."""
    if given and _TRACE_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def actor_of(event: PlannedEvent, author: Author | None) -> str:
    if event.by:
        return event.by[:ACTOR_LENGTH]
    if event.actor in GENERIC_ACTORS:
        principal = author.principal if author is not None else SYSTEM
        return principal.actor[:ACTOR_LENGTH]
    if event.actor == "system":
        return f"system:{event.type}"
    return (event.actor or "system")[:ACTOR_LENGTH]


def before_after(event: PlannedEvent) -> tuple[Any, Any]:
    """(before, after) of the change `event` records (see the module docstring)."""
    if event.before is not None or event.after is not None:
        return event.before, event.after
    data = event.data
    why = {key: data[key] for key in WHY_KEYS if key in data}
    changes = data.get("changes")
    if isinstance(changes, dict) and changes:
        return ({key: pair[0] for key, pair in changes.items()},
                {**{key: pair[1] for key, pair in changes.items()}, **why})
    if isinstance(data.get("from"), dict) and isinstance(data.get("to"), dict):
        return data["from"], {**data["to"], **why}
    return None, dict(data)


def history_rows(events: Sequence[PlannedEvent],
                 rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history rows of events just given ids (`rows`: their event rows, in order)."""
    author = AUTHOR.get()
    history: list[dict[str, Any]] = []
    for event, row in zip(events, rows, strict=True):
        if event.type in NOT_HISTORY or (row["ticket_id"] is None
                                         and row["customer_id"] is None):
            continue
        before, after = before_after(event)
        trace = event.trace_id or (author.trace_id if author is not None else None)
        history.append({
            "id": row["id"], "at": event.occurred_at, "ticket_id": row["ticket_id"],
            "customer_id": row["customer_id"], "actor": actor_of(event, author),
            "action": event.type, "before": before, "after": after,
            "trace_id": trace[:TRACE_LENGTH] if trace else None})
    return history


# ---- reading ------------------------------------------------------------------------------

def view(row: Any) -> dict[str, Any]:
    return {"id": row.id, "at": row.at.isoformat(), "ticket_id": row.ticket_id,
            "customer_id": row.customer_id, "actor": row.actor, "action": row.action,
            "before": row.before, "after": row.after, "trace_id": row.trace_id}


def with_merged(roots: Select[Any]) -> Select[Any]:
    """The ticket ids `roots` selects and those of every ticket merged into them, at any
    depth (a recursive CTE; UNION, not UNION ALL, so even a cycle ends)."""
    tree = roots.cte("merged_tree", recursive=True)
    tree = tree.union(select(TICKETS.c.id).where(TICKETS.c.merged_into == tree.c.id))
    return select(tree.c.id)


async def ticket_page(connection: AsyncConnection, ticket_id: str, after_id: int,
                      limit: int) -> list[Any]:
    """A page of the ticket's history and its merged sources', oldest first; the caller
    checked that the ticket is in scope."""
    ids = with_merged(select(TICKETS.c.id).where(TICKETS.c.id == ticket_id))
    return list((await connection.execute(
        select(HISTORY).where(HISTORY.c.ticket_id.in_(ids), HISTORY.c.id > after_id)
        .order_by(HISTORY.c.id).limit(limit))).all())


async def customer_page(connection: AsyncConnection, customer_id: str, after_id: int,
                        limit: int, principal: Principal | None = None) -> list[Any]:
    """A page of the customer's history, oldest first: the entries of their tickets in the
    caller's scope (with the tickets merged into those), and the customer's own changes
    (rows of no ticket)."""
    owned = where_visible(select(TICKETS.c.id).where(TICKETS.c.customer_id == customer_id),
                          visible_tickets(principal))
    # Two queries, each on its own index, rather than one OR that PostgreSQL would answer
    # with a scan of the whole table; their pages merged here.
    of_tickets = (await connection.execute(
        select(HISTORY).where(HISTORY.c.ticket_id.in_(with_merged(owned)),
                              HISTORY.c.id > after_id)
        .order_by(HISTORY.c.id).limit(limit))).all()
    # A merged customer's own past changes are the target's now (merging.py): the tombstones
    # merged into this one, at any depth (a handful, followed here rather than by a CTE).
    customers, frontier = [customer_id], [customer_id]
    while frontier:
        frontier = [c for c in (await connection.execute(select(CUSTOMERS.c.id).where(
            CUSTOMERS.c.merged_into.in_(frontier)))).scalars() if c not in customers]
        customers += frontier
    own = (await connection.execute(
        select(HISTORY).where(HISTORY.c.customer_id.in_(customers),
                              HISTORY.c.ticket_id.is_(None), HISTORY.c.id > after_id)
        .order_by(HISTORY.c.id).limit(limit))).all()
    return sorted([*of_tickets, *own], key=lambda row: row.id)[:limit]
