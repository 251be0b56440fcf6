"""Assignment (issue 17): who holds a ticket, since when, and since when it waits.

Tickets gain `assignee_id` (indexed: loads and `?assignee=`), `assigned_at` and
`waiting_since` (when it entered its skill group's queue again after a transfer or an
unassignment; NULL: since `created_at`, so the persist path writes nothing new). Agents gain
`last_assigned_at` (round robin: the eligible agent assigned least recently).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 03:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported, as in 0001.
Id = sa.String(36)
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("assignee_id", Id, nullable=True))
        batch.add_column(sa.Column("assigned_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("waiting_since", Timestamp, nullable=True))
    op.create_index("ix_tickets_assignee_id", "tickets", ["assignee_id"])
    with op.batch_alter_table("agents") as batch:
        batch.add_column(sa.Column("last_assigned_at", Timestamp, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("last_assigned_at")
    op.drop_index("ix_tickets_assignee_id", table_name="tickets")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("waiting_since")
        batch.drop_column("assigned_at")
        batch.drop_column("assignee_id")
