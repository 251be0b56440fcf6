"""Timers: one row per timed action; tickets keep their SLA, escalation and acknowledgement;
customers gain vip_level, language and fields; messages keep their own decision and sender
(the replay source, `GET /api/v1/decisions`).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported, as in 0001.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Id = sa.String(36)
Timestamp = sa.DateTime(timezone=True)
AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "timers",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("ticket_id", Id, nullable=False),
        sa.Column("ref", sa.String(256), nullable=False),
        sa.Column("due_at", Timestamp, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("fired_at", Timestamp, nullable=True),
        sa.Column("reason", sa.String(256), nullable=True),
        sa.Column("data", Json, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_timers"),
    )
    # The scheduler's query: pending rows by due time.
    op.create_index("ix_timers_state_due_at", "timers", ["state", "due_at"])
    op.create_index("ix_timers_ticket_id", "timers", ["ticket_id"])
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("acknowledged_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("sla", Json, nullable=True))
        batch.add_column(sa.Column("escalation", Json, nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("route", Json, nullable=True))
        batch.add_column(sa.Column("sender", Json, nullable=True))
    op.create_index("ix_messages_persisted_at_id", "messages", ["persisted_at", "id"])
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("vip_level", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("language", sa.String(35), nullable=True))
        batch.add_column(sa.Column("fields", Json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("fields")
        batch.drop_column("language")
        batch.drop_column("vip_level")
    op.drop_index("ix_messages_persisted_at_id", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("sender")
        batch.drop_column("route")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("escalation")
        batch.drop_column("sla")
        batch.drop_column("acknowledged_at")
    op.drop_index("ix_timers_ticket_id", table_name="timers")
    op.drop_index("ix_timers_state_due_at", table_name="timers")
    op.drop_table("timers")
