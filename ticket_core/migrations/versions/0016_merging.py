"""Merging tickets and customers (issue 17): `customers.merged_into`, and
`messages.original_ticket_number`.

A merged ticket needs no column of its own (`tickets.merged_into` and the `merged` status come
from 0010). A customer merged into another stays as a tombstone pointing at it. A message a
ticket merge moved keeps the number of the ticket it arrived on (the one customers quote);
NULL for a message on its own ticket, so the persist path writes nothing new.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 05:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.String(36)  # spelled out rather than imported, as in 0001


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("merged_into", Id, nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("original_ticket_number", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("original_ticket_number")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("merged_into")
