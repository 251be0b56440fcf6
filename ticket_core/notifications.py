"""Agents' durable notifications: `notify()` writes them in the caller's transaction; the agent
API lists an agent's own (`GET /api/v1/agents/me/notifications`) and marks them read.

What notifies (a transfer, a customer message to a first-contact agent, a mention, an SLA
warning) is decided by the code making that change: it calls `notify(connection, agent_ids,
ticket_id, kind, payload, at)` inside its write transaction, so a notification exists exactly
when its change committed. An agent sees only their own, and only those of tickets they can
read (scope.py): a token narrowed to one desk does not show another desk's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Connection

from .agent_schemas import NotificationPage, NotificationView
from .agents_db import NOTIFICATIONS
from .queries import TicketReader, decode_cursor, encode_cursor
from .scope import Principal, visible_tickets
from .statements import TICKETS


def notify(connection: Connection, agent_ids: Iterable[str | None], ticket_id: str | None,
           kind: str, payload: dict[str, Any], at: datetime) -> list[str]:
    """One notification per distinct agent (None and repeats skipped); returns their ids."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for agent_id in agent_ids:
        if agent_id is None or agent_id in seen:
            continue
        seen.add(agent_id)
        rows.append({"id": str(uuid.uuid4()), "agent_id": agent_id, "ticket_id": ticket_id,
                     "kind": kind, "payload": payload, "created_at": at, "read_at": None})
    if rows:
        connection.execute(NOTIFICATIONS.insert(), rows)
    return [row["id"] for row in rows]


def _view(row: Any) -> NotificationView:
    return NotificationView(id=row.id, agent_id=row.agent_id, ticket_id=row.ticket_id,
                            kind=row.kind, payload=row.payload or {},
                            created_at=row.created_at, read_at=row.read_at)


def _mine(principal: Principal) -> Any:
    """The caller's notifications, of tickets they can read (or of no ticket)."""
    condition = NOTIFICATIONS.c.agent_id == principal.agent_id
    visible = visible_tickets(principal)
    if visible is not None:
        condition = and_(condition, or_(
            NOTIFICATIONS.c.ticket_id.is_(None),
            NOTIFICATIONS.c.ticket_id.in_(select(TICKETS.c.id).where(visible)
                                          .scalar_subquery())))
    return condition


async def list_notifications(reader: TicketReader, principal: Principal, *, unread: bool,
                             limit: int, cursor: str | None) -> NotificationPage:
    """Newest first, keyset-paginated on (created_at, id); raises CursorInvalid."""
    query = select(NOTIFICATIONS).where(_mine(principal))
    if unread:
        query = query.where(NOTIFICATIONS.c.read_at.is_(None))
    if cursor:
        at, notification_id = decode_cursor(cursor)
        query = query.where(or_(NOTIFICATIONS.c.created_at < at, and_(
            NOTIFICATIONS.c.created_at == at, NOTIFICATIONS.c.id < notification_id)))
    query = query.order_by(NOTIFICATIONS.c.created_at.desc(),
                           NOTIFICATIONS.c.id.desc()).limit(limit + 1)
    async with reader._reading() as conn:
        rows = (await conn.execute(query)).all()
    items = [_view(row) for row in rows[:limit]]
    following = (encode_cursor(items[-1].created_at, items[-1].id)
                 if len(rows) > limit else None)
    return NotificationPage(items=items, next=following)


async def visible_notification(reader: TicketReader, principal: Principal,
                               notification_id: str) -> bool:
    async with reader._reading() as conn:
        row = (await conn.execute(select(NOTIFICATIONS.c.id).where(
            NOTIFICATIONS.c.id == notification_id, _mine(principal)))).first()
    return row is not None


def mark_read(connection: Connection, notification_id: str, at: datetime) -> NotificationView:
    """Set `read_at` once (reading it again keeps the first time)."""
    connection.execute(update(NOTIFICATIONS).where(
        NOTIFICATIONS.c.id == notification_id, NOTIFICATIONS.c.read_at.is_(None))
        .values(read_at=at))
    row = connection.execute(select(NOTIFICATIONS).where(
        NOTIFICATIONS.c.id == notification_id)).one()
    return _view(row)
