"""The ticket life cycle (issue 17): which status an agent may set after which, versions and
`If-Match`, and the automatic transitions (pending → resolved, resolved → closed) as timers.

Agent transitions (`PATCH /api/v1/tickets/{id} {"status"}`), from the issue's table:

| from \\ to | open | pending | on_hold | resolved | closed |
| --- | --- | --- | --- | --- | --- |
| new | yes | yes | yes | yes | no |
| open | – | yes | yes | yes | no |
| pending | yes | – | yes | yes | no |
| on_hold | yes | yes | – | yes | no |
| resolved | yes (reopen) | no | no | – | yes |
| closed, merged | no | no | no | no | no |

The status a ticket already has again changes nothing (200, no event, same version). Any
other target is `409 invalid_transition` naming the allowed ones; `merged` is the merge
operation's and `new` is never a target. A customer's message moves tickets too (planner.py).

Automatic transitions are durable timers (timers.py, scheduler.py): entering `pending` plans
`auto_resolve` due `tickets.pending_auto_resolve_after` later, entering `resolved` plans
`auto_close` due `tickets.resolved_auto_close_after` later; leaving the status cancels the
pending one (reason: the new status), and a timer finding its ticket in another status when it
comes due is cancelled too, never applied.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Connection

from .events import PlannedEvent
from .links import close_collaborators
from .statements import TICKETS, TIMERS
from .threads import TicketRef
from .timers import AUTOMATIC_KINDS, LifecycleSettings, timer_row

AGENT_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "new": ("open", "pending", "on_hold", "resolved"),
    "open": ("pending", "on_hold", "resolved"),
    "pending": ("open", "on_hold", "resolved"),
    "on_hold": ("open", "pending", "resolved"),
    "resolved": ("open", "closed"),
    "closed": (),
    "merged": (),
}
# The status a timer waits in → (its kind, the status it sets).
AUTOMATIC: dict[str, tuple[str, str]] = {
    "pending": ("auto_resolve", "resolved"),
    "resolved": ("auto_close", "closed"),
}
WAITS_IN = {kind: status for status, (kind, _) in AUTOMATIC.items()}
assert set(WAITS_IN) == set(AUTOMATIC_KINDS)


class InvalidTransition(Exception):
    """An agent asked for a status the table does not allow from the ticket's one."""

    def __init__(self, current: str, wanted: str) -> None:
        super().__init__(f"{current} → {wanted}")
        self.current, self.wanted = current, wanted
        self.allowed = AGENT_TRANSITIONS.get(current, ())


class VersionMismatch(Exception):
    """`If-Match` named another version than the ticket's."""

    def __init__(self, current: int) -> None:
        super().__init__(str(current))
        self.current = current


def parse_if_match(header: str | None) -> int | None:
    """The version an `If-Match` header asks for: `"3"`, `3` or `W/"3"`; None when absent or
    `*`. A value that is no version can match nothing: -1 (answered 412)."""
    if header is None or header.strip() in ("", "*"):
        return None
    value = header.strip().removeprefix("W/").strip().strip('"')
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else -1


def etag(version: int) -> str:
    return f'"{version}"'


def check_transition(current: str, wanted: str) -> None:
    if wanted != current and wanted not in AGENT_TRANSITIONS.get(current, ()):
        raise InvalidTransition(current, wanted)


def set_status(connection: Connection, row: Any, status: str, now: datetime, actor: str,
               settings: LifecycleSettings, extra: dict[str, Any] | None = None,
               ) -> tuple[list[PlannedEvent], list[Any]]:
    """Write `row`'s new status in the caller's transaction (version up, a reopen counted,
    the automatic transitions re-planned; a primary closed closes its collaborator tickets,
    links.py). Returns the `ticket.updated` events for the caller to append, and the
    collaborators closed (as they were). Not for a status it already has."""
    previous = row.status
    reopen = previous == "resolved" and status == "open"
    connection.execute(update(TICKETS).where(TICKETS.c.id == row.id).values(
        status=status, updated_at=now, version=TICKETS.c.version + 1,
        reopened_count=TICKETS.c.reopened_count + int(reopen)))
    replan(connection, row.id, previous, status, now, settings)
    collaborators = close_collaborators(connection, row.id, status, now)
    events = [_updated(row, status, actor, now, {"reopened": reopen, **(extra or {})})]
    for collaborator in collaborators:
        replan(connection, collaborator.id, collaborator.status, "closed", now, settings)
        events.append(_updated(collaborator, "closed", "system", now, {
            "reason": f"primary ticket {row.number} {status}", "primary_ticket_id": row.id}))
        events[-1].by = "system:linked_tickets"
    return events, collaborators


def _updated(row: Any, status: str, actor: str, now: datetime,
             extra: dict[str, Any]) -> PlannedEvent:
    ref = TicketRef(id=row.id, number=row.number, status=status,
                    customer_id=row.customer_id, channel=row.channel, desk=row.desk)
    return PlannedEvent(
        "ticket.updated", now, ref, row.customer_id, actor,
        {"status": status, "previous_status": row.status,
         "changes": {"status": [row.status, status]}, "channel": row.channel,
         "account": row.account, "conversation_id": row.conversation_id,
         "subject": row.subject, **extra})


def replan(connection: Connection, ticket_id: str, previous: str, status: str,
           now: datetime, settings: LifecycleSettings) -> None:
    """Cancel the automatic transition of the status left, plan the one of the status
    entered (due from now, domain time)."""
    if previous == status:
        return
    if previous in AUTOMATIC:
        connection.execute(update(TIMERS).where(
            TIMERS.c.ticket_id == ticket_id, TIMERS.c.kind == AUTOMATIC[previous][0],
            TIMERS.c.state == "pending").values(state="cancelled", reason=f"ticket {status}"))
    if status in AUTOMATIC:
        kind, target = AUTOMATIC[status]
        after = (settings.pending_auto_resolve_after if status == "pending"
                 else settings.resolved_auto_close_after)
        connection.execute(TIMERS.insert(), [timer_row(kind, ticket_id, target, now + after,
                                                       now, {"after": after.total_seconds()})])


def automatic_due(work: Any, timer: Any, now: datetime) -> tuple[str, str | None]:
    """An `auto_resolve` or `auto_close` timer come due, on the scheduler's locked
    `TicketWork`: the ticket still waiting in its status moves on (actor `system`)."""
    waits_in = WAITS_IN[timer.kind]
    if work.status != waits_in:
        return "cancelled", f"ticket {work.status}"
    status = AUTOMATIC[waits_in][1]
    events, _ = set_status(work.connection, _AsIs(work.row, work.status, work.desk), status,
                           now, "system", work.timelines.lifecycle, {"reason": timer.kind})
    work.events.extend(events)
    if status == "resolved":  # with `on_auto_resolve`, a satisfaction request
        from .satisfaction import request_satisfaction  # it builds on replies, which on this

        work.events.extend(request_satisfaction(
            work.connection, _AsIs(work.row, work.status, work.desk), now,
            work.timelines.satisfaction, automatic=True))
    work.status = status
    work.settle(status, now, "system")
    return "fired", None


class _AsIs:
    """The scheduler's row with what this round changed already (status, desk)."""

    def __init__(self, row: Any, status: str, desk: str | None) -> None:
        self._row, self.status, self.desk = row, status, desk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, name)
