"""The audit history (issue 17): `history`, append-only.

One row per change of a ticket or customer, keyed by the id of the event written with it
(store.append_events, history.py). No API edits or deletes it; on PostgreSQL a trigger
refuses UPDATE and DELETE (the ticket core's own role could otherwise do both), and SQLite
gets the same refusal as two triggers, so the rule holds on both databases.

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-06 05:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out rather than imported, as in 0001.
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Id = sa.String(36)
Timestamp = sa.DateTime(timezone=True)

REFUSED = "history is append-only"
PG_FUNCTION = f"""
CREATE FUNCTION history_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{REFUSED}: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$
"""
PG_TRIGGER = """
CREATE TRIGGER history_append_only BEFORE UPDATE OR DELETE ON history
FOR EACH ROW EXECUTE FUNCTION history_append_only()
"""
# TRUNCATE skips row triggers: a statement trigger refuses it too.
PG_TRUNCATE_TRIGGER = """
CREATE TRIGGER history_no_truncate BEFORE TRUNCATE ON history
FOR EACH STATEMENT EXECUTE FUNCTION history_append_only()
"""


def upgrade() -> None:
    op.create_table(
        "history",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("ticket_id", Id, nullable=True),
        sa.Column("customer_id", Id, nullable=True),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("before", Json, nullable=True),
        sa.Column("after", Json, nullable=True),
        sa.Column("trace_id", sa.String(128), nullable=True),
    )
    op.create_index("ix_history_ticket_id_id", "history", ["ticket_id", "id"])
    op.create_index("ix_history_customer_id_id", "history", ["customer_id", "id"])
    if op.get_context().dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        op.execute(PG_TRIGGER)
        op.execute(PG_TRUNCATE_TRIGGER)
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER history_no_{verb.lower()} BEFORE {verb} ON history "
                       f"BEGIN SELECT RAISE(ABORT, '{REFUSED}: {verb} refused'); END")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER history_no_truncate ON history")
        op.execute("DROP TRIGGER history_append_only ON history")
        op.execute("DROP FUNCTION history_append_only()")
    else:
        op.execute("DROP TRIGGER history_no_update")
        op.execute("DROP TRIGGER history_no_delete")
    op.drop_index("ix_history_customer_id_id", table_name="history")
    op.drop_index("ix_history_ticket_id_id", table_name="history")
    op.drop_table("history")
