"""Calls: one row per phone call (line, call id) with its pop, pick and record.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported, as in 0001.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Id = sa.String(36)
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("line", sa.String(128), nullable=False),
        sa.Column("call_id", sa.String(200), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("caller", sa.String(64), nullable=True),
        sa.Column("desk", sa.String(128), nullable=True),
        sa.Column("customer_id", Id, nullable=True),
        sa.Column("call", Json, nullable=False),
        sa.Column("pop", Json, nullable=True),
        sa.Column("pick", Json, nullable=True),
        sa.Column("history", Json, nullable=False),
        sa.Column("ringing_event_at", Timestamp, nullable=True),
        sa.Column("answered_event_at", Timestamp, nullable=True),
        sa.Column("ended_event_at", Timestamp, nullable=True),
        sa.Column("ticket_id", Id, nullable=True),
        sa.Column("message_id", Id, nullable=True),
        sa.Column("recorded_at", Timestamp, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("line", "call_id", name="pk_calls"),
    )
    op.create_index("ix_calls_call_id", "calls", ["call_id"])


def downgrade() -> None:
    op.drop_index("ix_calls_call_id", table_name="calls")
    op.drop_table("calls")
