"""The tables of agents, their API tokens and their notifications (migration 0007).

Kept apart from db.py's ticket tables; db.py imports this module so that one metadata (and
test_db.py's comparison with the migrations) holds every table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Index, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from .db import Base, Id, Json, UtcDateTime


class Agent(Base):
    """A person working tickets: role, desks, skill groups, per-channel capacity, presence."""

    __tablename__ = "agents"
    __table_args__ = (Index("ix_agents_created_at_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    # The domain lower-cased (RFC 5321: the local part may be case-sensitive); unique.
    email: Mapped[str] = mapped_column(String(320), nullable=False, unique=True)
    role: Mapped[str] = mapped_column(String(16), nullable=False)  # agent, supervisor, admin
    desks: Mapped[list[str]] = mapped_column(Json, nullable=False)
    skill_groups: Mapped[list[str]] = mapped_column(Json, nullable=False)
    # {channel: tickets at once}; a channel left out takes the skill group's capacity.
    capacity: Mapped[dict[str, Any]] = mapped_column(Json, nullable=False)
    presence: Mapped[str] = mapped_column(String(16), nullable=False)  # online, away, offline
    presence_changed_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    # Migration 0012: round robin's order (assigning.py).
    last_assigned_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ApiToken(Base):
    """A bearer token of one agent: only its SHA-256 is stored; `desks` null means all of the
    agent's desks at the time of each request, a list narrows them."""

    __tablename__ = "api_tokens"
    __table_args__ = (Index("ix_api_tokens_agent_id", "agent_id"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    agent_id: Mapped[str] = mapped_column(Id, nullable=False)
    name: Mapped[str | None] = mapped_column(String(200))
    desks: Mapped[list[str] | None] = mapped_column(Json)
    token_sha256: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Notification(Base):
    """Something an agent should see (a transfer, a mention, an SLA warning), durable."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_agent_id_created_at_id",
                            "agent_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    agent_id: Mapped[str] = mapped_column(Id, nullable=False)
    ticket_id: Mapped[str | None] = mapped_column(Id)
    kind: Mapped[str] = mapped_column(String(64), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(Json, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    read_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


AGENTS = cast(Table, Agent.__table__)
API_TOKENS = cast(Table, ApiToken.__table__)
NOTIFICATIONS = cast(Table, Notification.__table__)
__all__ = ["AGENTS", "API_TOKENS", "NOTIFICATIONS", "Agent", "ApiToken", "Notification"]
