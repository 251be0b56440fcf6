"""Linked tickets: one ticket per delivery of a `multi` or `primary_secondary` decision.

Tickets gain `role` (the delivery's: owner, primary, copy, collaborator), `customer_facing`
(false for a linked ticket: it never sends to the customer), `primary_ticket_id` (the
customer-facing ticket whose messages a linked ticket shows) and `link_relation` ("multi" or
"collaborator").

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 17:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.String(36)


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("role", sa.String(16), nullable=False,
                                   server_default="owner"))
        batch.add_column(sa.Column("customer_facing", sa.Boolean(), nullable=False,
                                   server_default=sa.true()))
        batch.add_column(sa.Column("primary_ticket_id", Id, nullable=True))
        batch.add_column(sa.Column("link_relation", sa.String(16), nullable=True))
    op.create_index("ix_tickets_primary_ticket_id", "tickets", ["primary_ticket_id"])


def downgrade() -> None:
    op.drop_index("ix_tickets_primary_ticket_id", table_name="tickets")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("link_relation")
        batch.drop_column("primary_ticket_id")
        batch.drop_column("customer_facing")
        batch.drop_column("role")
