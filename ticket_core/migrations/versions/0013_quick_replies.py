"""Quick replies managed through the API (issue 17): `quick_replies`.

Those of the config's `tickets.quick_replies` are not stored. Follow-up reminders need no
table: each is a row of `timers` of kind `reminder` (reminders.py), found by the index
`ix_timers_kind_ref_due_at` (kind, its agent, due time).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 04:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported, as in 0001.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Id = sa.String(36)
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "quick_replies",
        sa.Column("id", Id, primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("shortcut", sa.String(32), nullable=True),
        sa.Column("desks", Json, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
    )
    op.create_index("ix_quick_replies_created_at_id", "quick_replies", ["created_at", "id"])
    # An agent's reminders, soonest first (`GET /api/v1/agents/me/reminders`).
    op.create_index("ix_timers_kind_ref_due_at", "timers", ["kind", "ref", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_timers_kind_ref_due_at", table_name="timers")
    op.drop_index("ix_quick_replies_created_at_id", table_name="quick_replies")
    op.drop_table("quick_replies")
