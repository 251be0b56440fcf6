"""Satisfaction: the customer's latest rating of a ticket, set by a `satisfaction` event.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 16:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported, as in 0001.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # batch: SQLite adds a nullable column in place; on PostgreSQL it is a plain ALTER.
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("satisfaction", Json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("satisfaction")
