"""Replies and events: delivery columns on messages, the outbox, the event log and its counters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported, as in 0001.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Id = sa.String(36)
AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("delivery_status", sa.String(16), nullable=True))
        batch.add_column(sa.Column("delivery_reason", sa.String(256), nullable=True))
        batch.add_column(sa.Column("delivery_attempt", sa.Integer(), nullable=True))

    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("occurred_at", Timestamp, nullable=False),
        sa.Column("desk", sa.String(128), nullable=True),
        sa.Column("ticket_id", Id, nullable=True),
        sa.Column("customer_id", Id, nullable=True),
        sa.Column("actor", sa.String(128), nullable=True),
        sa.Column("data", Json, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", AutoId, autoincrement=True, nullable=False),
        sa.Column("message_id", Id, nullable=False),
        sa.Column("routing_key", sa.String(400), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("published_at", Timestamp, nullable=True),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE",
                                name="fk_outbox_message_id_messages"),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_published_at_id", "outbox", ["published_at", "id"])
    op.bulk_insert(sa.table("counters", sa.column("name"), sa.column("value")),
                   [{"name": "event_id", "value": 0}, {"name": "events_relayed", "value": 0}])


def downgrade() -> None:
    op.execute("DELETE FROM counters WHERE name IN ('event_id', 'events_relayed')")
    op.drop_index("ix_outbox_published_at_id", table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("events")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("delivery_attempt")
        batch.drop_column("delivery_reason")
        batch.drop_column("delivery_status")
