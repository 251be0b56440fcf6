"""The ticket life cycle (issue 17): versions, reopen counts, follow-ups, merge targets, notes.

Tickets gain `version` (bumped by every change; `If-Match` on `PATCH` compares it),
`reopened_count` (resolved → open, by an agent or the customer), `follow_up_of` (the closed
ticket a customer's message followed up on) and `merged_into` (set on a merged ticket: later
messages go there). `ticket_notes` holds the agents' internal notes with their mentions.

Revision ID: 0010
Revises: 0006
Create Date: 2026-12-06 03:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported, as in 0001.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Id = sa.String(36)
Timestamp = sa.DateTime(timezone=True)
AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False,
                                   server_default="1"))
        batch.add_column(sa.Column("reopened_count", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("follow_up_of", Id, nullable=True))
        batch.add_column(sa.Column("merged_into", Id, nullable=True))
    op.create_index("ix_tickets_follow_up_of", "tickets", ["follow_up_of"])
    op.create_table(
        "ticket_notes",
        sa.Column("id", Id, primary_key=True),
        sa.Column("ticket_id", Id, nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("mentions", Json, nullable=False),
        sa.Column("author", sa.String(128), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"],
                                name="fk_ticket_notes_ticket_id_tickets"),
    )
    op.create_index("ix_ticket_notes_ticket_id", "ticket_notes", ["ticket_id"])


def downgrade() -> None:
    op.drop_index("ix_ticket_notes_ticket_id", table_name="ticket_notes")
    op.drop_table("ticket_notes")
    op.drop_index("ix_tickets_follow_up_of", table_name="tickets")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("merged_into")
        batch.drop_column("follow_up_of")
        batch.drop_column("reopened_count")
        batch.drop_column("version")
