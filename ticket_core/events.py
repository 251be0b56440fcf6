"""The event log: planned events, their rows and envelopes, and reading the log in id order.

Each change writes its events in its own transaction (`PlannedEvent.row`, ids taken from the
`event_id` counter row at the end of the transaction, see db.EVENT_COUNTER). The envelope is
DESIGN.md's `{id, type, occurred_at, desk, ticket_id, customer_id, actor, data}`; the relay
publishes it to `intake.events` with key `<type>.<desk>` and the SSE stream serves it.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import db

if TYPE_CHECKING:
    from .planner import TicketRef

EVENTS = db.Event.__table__
EVENT_TYPES = ("ticket.created", "ticket.updated", "message.created",
               "message.delivery_updated", "call.ringing", "call.answered", "call.ended",
               # Timers and the acknowledge and advance endpoints (timeline.py).
               "ticket.acknowledged", "ticket.transferred", "sla.warning", "sla.breached",
               "escalation.step_started", "escalation.step_completed",
               "escalation.step_overdue", "escalation.breached", "customer.updated",
               # Escalations raised by hand and completed, early or not (escalations.py).
               "escalation.raised", "escalation.completed",
               "satisfaction.answered",
               # Satisfaction requests (satisfaction.py): ids and times, never the token.
               "satisfaction.requested", "satisfaction.expired",
               # Internal notes (notes.py): the note's id and mentions, never its text.
               "note.created",
               # Follow-up reminders (reminders.py): ids and times, never the note.
               "reminder.created", "reminder.due", "reminder.updated",
               # Merges (merging.py): one per ticket or customer, `before`/`after` in data.
               "ticket.merged", "customer.merged")
# The routing key's desk part for an event without one (a customer-timeline event).
NO_DESK = "none"


@dataclass(slots=True)
class PlannedEvent:
    """An event of a write being planned; the ticket's number and desk are read at write time
    (a new ticket's number is allocated after planning)."""

    type: str
    occurred_at: datetime
    ticket: TicketRef | None
    customer_id: str | None
    actor: str
    data: dict[str, Any]
    # The audit history's view of the change (history.py): the values before and after it
    # when the data's `changes` or `from`/`to` do not say it, the actor when the event's is
    # generic (`system:<rule or timer>`, or the agent and token), the trace it belongs to.
    before: Any = None
    after: Any = None
    by: str | None = None
    trace_id: str | None = None

    def row(self, event_id: int) -> dict[str, Any]:
        ticket = self.ticket
        data = dict(self.data)
        if ticket is not None:
            data["ticket_number"] = ticket.number
        return {"id": event_id, "type": self.type, "occurred_at": self.occurred_at,
                "desk": ticket.desk if ticket else None,
                "ticket_id": ticket.id if ticket else None,
                "customer_id": self.customer_id, "actor": self.actor, "data": data}


def envelope(row: Any) -> dict[str, Any]:
    """A stored event row (a result row, or the mapping it was inserted from) as the JSON
    envelope."""
    if isinstance(row, Mapping):
        return {"id": row["id"], "type": row["type"],
                "occurred_at": row["occurred_at"].isoformat(), "desk": row["desk"],
                "ticket_id": row["ticket_id"], "customer_id": row["customer_id"],
                "actor": row["actor"], "data": row["data"]}
    return {"id": row.id, "type": row.type, "occurred_at": row.occurred_at.isoformat(),
            "desk": row.desk, "ticket_id": row.ticket_id, "customer_id": row.customer_id,
            "actor": row.actor, "data": row.data}


def routing_key(row: Any) -> str:
    """`<type>.<desk>`, e.g. `ticket.created.aftersales`."""
    if isinstance(row, Mapping):
        return f"{row['type']}.{row['desk'] or NO_DESK}"
    return f"{row.type}.{row.desk or NO_DESK}"


class RecentEvents:
    """The event rows this process committed last, in id order, kept for the relay.

    Reading back what the writer has just inserted cost the relay a query and a JSON decode
    per event (a third of its CPU under load). The relay takes rows from here while they
    continue its position without a gap; anything else (rows another process or another
    write path committed, a restart, a row dropped as the buffer overflowed) leaves a gap,
    and a gap sends it to the log itself, which is always right.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._rows: deque[dict[str, Any]] = deque(maxlen=limit)

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        """Rows of a committed transaction (never before its commit)."""
        self._rows.extend(rows)

    def after(self, last_id: int, limit: int) -> list[dict[str, Any]] | None:
        """Up to `limit` rows from `last_id + 1` on without a gap, or None when the next row
        is not here (read the log instead)."""
        rows = self._rows
        while rows and rows[0]["id"] <= last_id:
            rows.popleft()
        if not rows:
            return None
        if rows[0]["id"] != last_id + 1:
            return None
        taken: list[dict[str, Any]] = []
        expected = last_id + 1
        for row in rows:
            if row["id"] != expected or len(taken) == limit:
                break
            taken.append(row)
            expected += 1
        return taken


def for_agent(row: Any, agent: str | None) -> bool:
    """`?agent=<id>`: a call event whose `data.agents` is empty or names the agent; every
    other event passes."""
    if agent is None or not row.type.startswith("call."):
        return True
    agents = (row.data or {}).get("agents") or []
    return not agents or agent in agents


class TypeFilter:
    """`?types=ticket.*,message.created`: patterns with `*` wildcards; empty matches all."""

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = [p for p in patterns if p]
        self._regex = re.compile("|".join(
            "(?:" + ".*".join(re.escape(part) for part in p.split("*")) + ")"
            for p in self.patterns)) if self.patterns else None

    @classmethod
    def parse(cls, text: str | None) -> TypeFilter:
        return cls([p.strip() for p in (text or "").split(",") if p.strip()])

    def __call__(self, event_type: str) -> bool:
        return self._regex is None or self._regex.fullmatch(event_type) is not None
