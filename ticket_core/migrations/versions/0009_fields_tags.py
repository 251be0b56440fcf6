"""Custom fields and tags: `tickets.fields` (JSON, {key: canonical value}) and `ticket_tags`
(one row per ticket and tag, indexed by tag for `GET /api/v1/tickets?tag=`), filled from the
tags tickets have already, in their normalised spelling.

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-06 03:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.String(36)
Json = sa.JSON().with_variant(JSONB(), "postgresql")
BATCH = 1_000


def upgrade() -> None:
    from ticket_core.tags import lenient_tags

    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("fields", Json, nullable=True))
    tags = op.create_table(
        "ticket_tags",
        sa.Column("ticket_id", Id, sa.ForeignKey("tickets.id", ondelete="CASCADE",
                                                 name="fk_ticket_tags_ticket_id_tickets"),
                  nullable=False),
        sa.Column("tag", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", "tag", name="pk_ticket_tags"),
    )
    op.create_index("ix_ticket_tags_tag_ticket_id", "ticket_tags", ["tag", "ticket_id"])
    connection = op.get_bind()
    tickets = sa.table("tickets", sa.column("id", Id), sa.column("tags", Json))
    last = ""
    while True:  # keyset pages: a large table is read in bounded pieces
        rows = connection.execute(sa.select(tickets.c.id, tickets.c.tags)
                                  .where(tickets.c.id > last)
                                  .order_by(tickets.c.id).limit(BATCH)).all()
        if not rows:
            break
        found = [{"ticket_id": row.id, "tag": tag} for row in rows
                 for tag in lenient_tags(row.tags or [])]
        if found:
            connection.execute(tags.insert(), found)
        last = rows[-1].id


def downgrade() -> None:
    op.drop_index("ix_ticket_tags_tag_ticket_id", table_name="ticket_tags")
    op.drop_table("ticket_tags")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("fields")
