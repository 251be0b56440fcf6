"""The orders of `GET /api/v1/tickets?sort=…` with their keyset cursors, and the `?sla=` filter.

- `created` (the default): newest first, on (created_at, id): the landed cursor, unchanged;
- `updated`: the most recently changed first, on (updated_at, id);
- `priority`: urgent, high, normal, low, then the oldest first (the longest wait);
- `due`: the nearest SLA due time first (the earliest pending `sla_breach` timer of the
  ticket's clocks, sla.py); tickets with no clock running (none, met, paused) last.

A cursor of another order than `created` carries its order's name and key values, so a
cursor of one order given to another is refused (`CursorInvalid`).

`sla=breached`: tickets with a breach fired (a target missed, whatever happened since);
`sla=warning`: tickets warned and not (yet) breached. Both read the timers table: a fired
`sla_warning` or `sla_breach` timer is the one record of a warning or breach given.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select

from .statements import TICKETS, TIMERS

SORTS = ("created", "updated", "due", "priority")
SLA_STATES = ("warning", "breached")
PRIORITY_RANK = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
# Tickets without a running clock sort after every due time.
NEVER = datetime(9999, 12, 31, tzinfo=UTC)


class CursorInvalid(ValueError):
    """The cursor was not produced by this order."""


@dataclass(frozen=True, slots=True)
class Key:
    expression: Any
    descending: bool
    kind: str  # "time" or "int": how the cursor carries it


def _next_due() -> Any:
    due = select(func.min(TIMERS.c.due_at)).where(
        TIMERS.c.ticket_id == TICKETS.c.id, TIMERS.c.kind == "sla_breach",
        TIMERS.c.state == "pending").scalar_subquery()
    return func.coalesce(due, literal(NEVER, TIMERS.c.due_at.type))


def keys(sort: str) -> list[Key]:
    """The order's keys, the ticket id last (in the direction of the key before it)."""
    if sort == "updated":
        found = [Key(TICKETS.c.updated_at, True, "time")]
    elif sort == "priority":
        rank = case(PRIORITY_RANK, value=TICKETS.c.priority, else_=len(PRIORITY_RANK))
        found = [Key(rank, False, "int"), Key(TICKETS.c.created_at, False, "time")]
    elif sort == "due":
        found = [Key(_next_due(), False, "time")]
    else:
        found = [Key(TICKETS.c.created_at, True, "time")]
    return [*found, Key(TICKETS.c.id, found[-1].descending, "str")]


def ordered(query: Any, sort: str) -> Any:
    """The query with the order's keys as columns `_k0…` and its ORDER BY."""
    found = keys(sort)
    query = query.add_columns(*[k.expression.label(f"_k{i}") for i, k in enumerate(found)])
    return query.order_by(*[k.expression.desc() if k.descending else k.expression.asc()
                            for k in found])


def after(query: Any, sort: str, cursor: str) -> Any:
    """The rows after the cursor's: a keyset condition over the order's keys."""
    found = keys(sort)
    values = decode(sort, cursor, found)
    conditions: list[ColumnElement[bool]] = []
    for i, key in enumerate(found):
        equal = [found[j].expression == values[j] for j in range(i)]
        beyond = key.expression < values[i] if key.descending else key.expression > values[i]
        conditions.append(and_(*equal, beyond))
    return query.where(or_(*conditions))


def encode(sort: str, row: Any) -> str:
    """The cursor of `row` (selected by `ordered`)."""
    values: list[Any] = []
    for i, key in enumerate(keys(sort)):
        value = getattr(row, f"_k{i}")
        if key.kind == "time":
            value = _aware(value).isoformat()
        values.append(value)
    raw = orjson.dumps([sort, values])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(sort: str, cursor: str, found: list[Key]) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, values = orjson.loads(raw)
        if name != sort or not isinstance(values, list) or len(values) != len(found):
            raise CursorInvalid("a cursor of another order")
        decoded: list[Any] = []
        for key, value in zip(found, values, strict=True):
            if key.kind == "time":
                decoded.append(_aware(datetime.fromisoformat(value)))
            elif key.kind == "int" and isinstance(value, int) and not isinstance(value, bool):
                decoded.append(value)
            elif key.kind == "str" and isinstance(value, str):
                decoded.append(value)
            else:
                raise CursorInvalid("malformed cursor")
        return decoded
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise CursorInvalid(str(exc)) from exc


def _aware(value: Any) -> datetime:
    """min() of a SQLite column may come back as its stored text (naive UTC)."""
    found = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


def sla_condition(state: str) -> Any:
    """`?sla=breached` or `?sla=warning` (module docstring)."""
    def fired(kind: str) -> Any:
        return TICKETS.c.id.in_(select(TIMERS.c.ticket_id).where(
            TIMERS.c.kind == kind, TIMERS.c.state == "fired"))

    if state == "breached":
        return fired("sla_breach")
    return and_(fired("sla_warning"), ~fired("sla_breach"))
