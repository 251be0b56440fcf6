"""Satisfaction requests (issue 17): `satisfaction_requests`, one row per rating link sent.

Only the SHA-256 of a link's token is stored. The expiry of a link is a row of `timers` of
kind `satisfaction_expiry` (satisfaction.py); the ticket's `satisfaction` (migration 0005)
gains `request_status` in its JSON, no column.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 05:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported, as in 0001.
Id = sa.String(36)
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "satisfaction_requests",
        sa.Column("id", Id, primary_key=True),
        sa.Column("ticket_id", Id, sa.ForeignKey("tickets.id"), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message_id", Id, nullable=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("account", sa.String(256), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("expires_at", Timestamp, nullable=False),
        sa.Column("answered_at", Timestamp, nullable=True),
        sa.Column("closed_at", Timestamp, nullable=True),
    )
    op.create_index("ix_satisfaction_requests_ticket_id_created_at", "satisfaction_requests",
                    ["ticket_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_satisfaction_requests_ticket_id_created_at",
                  table_name="satisfaction_requests")
    op.drop_table("satisfaction_requests")
