"""Agents, their API tokens (SHA-256 only) and notifications; tickets gain
`first_contact_agent_id` (the 首问负责人, who keeps read and notes access).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 03:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported, as in 0001.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Id = sa.String(36)
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", Id, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("desks", Json, nullable=False),
        sa.Column("skill_groups", Json, nullable=False),
        sa.Column("capacity", Json, nullable=False),
        sa.Column("presence", sa.String(16), nullable=False),
        sa.Column("presence_changed_at", Timestamp, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
        sa.UniqueConstraint("email", name="uq_agents_email"),
    )
    op.create_index("ix_agents_created_at_id", "agents", ["created_at", "id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", Id, nullable=False),
        sa.Column("agent_id", Id, nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("desks", Json, nullable=True),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("expires_at", Timestamp, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("revoked_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_sha256", name="uq_api_tokens_token_sha256"),
    )
    op.create_index("ix_api_tokens_agent_id", "api_tokens", ["agent_id"])
    op.create_table(
        "notifications",
        sa.Column("id", Id, nullable=False),
        sa.Column("agent_id", Id, nullable=False),
        sa.Column("ticket_id", Id, nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("payload", Json, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("read_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
    )
    op.create_index("ix_notifications_agent_id_created_at_id", "notifications",
                    ["agent_id", "created_at", "id"])
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("first_contact_agent_id", Id, nullable=True))
    op.create_index("ix_tickets_first_contact_agent_id", "tickets", ["first_contact_agent_id"])


def downgrade() -> None:
    op.drop_index("ix_tickets_first_contact_agent_id", table_name="tickets")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("first_contact_agent_id")
    op.drop_index("ix_notifications_agent_id_created_at_id", table_name="notifications")
    op.drop_table("notifications")
    op.drop_index("ix_api_tokens_agent_id", table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_index("ix_agents_created_at_id", table_name="agents")
    op.drop_table("agents")
