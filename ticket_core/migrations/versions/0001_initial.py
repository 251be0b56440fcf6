"""Initial schema: customers and their identities, tickets, messages, attachments, counters.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Types spelled out here rather than imported from ticket_core.db, so this revision keeps
# describing the schema it created even after the models move on.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Id = sa.String(36)
AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_counters"),
    )
    op.bulk_insert(sa.table("counters", sa.column("name"), sa.column("value")),
                   [{"name": "ticket_number", "value": 1000}])

    op.create_table(
        "customers",
        sa.Column("id", Id, nullable=False),
        sa.Column("name", sa.String(512), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_customers"),
    )

    op.create_table(
        "customer_identities",
        sa.Column("id", AutoId, autoincrement=True, nullable=False),
        sa.Column("customer_id", Id, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("value", sa.String(512), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], ondelete="CASCADE",
                                name="fk_customer_identities_customer_id_customers"),
        sa.PrimaryKeyConstraint("id", name="pk_customer_identities"),
        sa.UniqueConstraint("kind", "value", name="uq_customer_identities_kind_value"),
    )
    op.create_index("ix_customer_identities_customer_id", "customer_identities",
                    ["customer_id"])

    op.create_table(
        "tickets",
        sa.Column("id", Id, nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("account", sa.String(320), nullable=False),
        sa.Column("desk", sa.String(128), nullable=True),
        sa.Column("skill_group", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("category", sa.String(128), nullable=True),
        sa.Column("tags", Json, nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("customer_id", Id, nullable=False),
        sa.Column("route", Json, nullable=True),
        sa.Column("conversation_id", sa.String(512), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"],
                                name="fk_tickets_customer_id_customers"),
        sa.PrimaryKeyConstraint("id", name="pk_tickets"),
        sa.UniqueConstraint("number", name="uq_tickets_number"),
    )
    op.create_index("ix_tickets_created_at_id", "tickets", ["created_at", "id"])
    op.create_index("ix_tickets_customer_id_channel_status", "tickets",
                    ["customer_id", "channel", "status"])
    op.create_index("ix_tickets_conversation_id", "tickets", ["conversation_id"])
    op.create_index("ix_tickets_desk_status", "tickets", ["desk", "status"])

    op.create_table(
        "messages",
        sa.Column("id", Id, nullable=False),
        sa.Column("ticket_id", Id, nullable=True),
        sa.Column("customer_id", Id, nullable=False),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("account", sa.String(320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("flags", Json, nullable=False),
        sa.Column("form", Json, nullable=True),
        sa.Column("call", Json, nullable=True),
        sa.Column("event", Json, nullable=True),
        sa.Column("channel_data", Json, nullable=True),
        sa.Column("thread", Json, nullable=True),
        sa.Column("idempotency_key", sa.String(1024), nullable=False),
        sa.Column("message_id", sa.String(998), nullable=True),
        sa.Column("reference", sa.String(128), nullable=True),
        sa.Column("occurred_at", Timestamp, nullable=True),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.Column("persisted_at", Timestamp, nullable=False),
        sa.Column("raw", sa.String(128), nullable=True),
        sa.Column("trace_id", sa.String(128), nullable=True),
        sa.Column("sender_name", sa.String(512), nullable=True),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"],
                                name="fk_messages_customer_id_customers"),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"],
                                name="fk_messages_ticket_id_tickets"),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.UniqueConstraint("idempotency_key", name="uq_messages_idempotency_key"),
    )
    op.create_index("ix_messages_ticket_id", "messages", ["ticket_id"])
    op.create_index("ix_messages_customer_id", "messages", ["customer_id"])
    op.create_index("ix_messages_message_id", "messages", ["message_id"])
    op.create_index("ix_messages_reference", "messages", ["reference"])

    op.create_table(
        "attachments",
        sa.Column("id", AutoId, autoincrement=True, nullable=False),
        sa.Column("message_id", Id, nullable=False),
        sa.Column("filename", sa.String(1024), nullable=False),
        sa.Column("original_filename", sa.String(1024), nullable=True),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("blob", sa.String(128), nullable=False),
        sa.Column("content_id", sa.String(998), nullable=True),
        sa.Column("inline", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE",
                                name="fk_attachments_message_id_messages"),
        sa.PrimaryKeyConstraint("id", name="pk_attachments"),
    )
    op.create_index("ix_attachments_message_id", "attachments", ["message_id"])


def downgrade() -> None:
    op.drop_table("attachments")
    op.drop_table("messages")
    op.drop_table("tickets")
    op.drop_table("customer_identities")
    op.drop_table("customers")
    op.drop_table("counters")
