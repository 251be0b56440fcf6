"""The event log: planned events, their rows and envelopes, and reading the log in id order.

Each change writes its events in its own transaction (`PlannedEvent.row`, ids taken from the
`event_id` counter row at the end of the transaction, see db.EVENT_COUNTER). The envelope is
DESIGN.md's `{id, type, occurred_at, desk, ticket_id, customer_id, actor, data}`; the relay
publishes it to `intake.events` with key `<type>.<desk>` and the SSE stream serves it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import db

if TYPE_CHECKING:
    from .planner import TicketRef

EVENTS = db.Event.__table__
EVENT_TYPES = ("ticket.created", "ticket.updated", "message.created",
               "message.delivery_updated", "call.ringing", "call.answered", "call.ended")
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
    """A stored event row as the JSON envelope."""
    return {"id": row.id, "type": row.type, "occurred_at": row.occurred_at.isoformat(),
            "desk": row.desk, "ticket_id": row.ticket_id, "customer_id": row.customer_id,
            "actor": row.actor, "data": row.data}


def routing_key(row: Any) -> str:
    """`<type>.<desk>`, e.g. `ticket.created.aftersales`."""
    return f"{row.type}.{row.desk or NO_DESK}"


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
