"""Search: one document per ticket (its token stream and text), indexed per backend.

`search_documents` (`id`, `ticket_id` unique, `tokens`, `content`): `tokens` is the ticket's
token stream (intake/search_text.py, space-separated), `content` the text it came from (for
snippets). PostgreSQL adds `document tsvector` (written beside `tokens`) with a GIN index; SQLite
an FTS5 table over `tokens` (external content, tokenizer `ascii`: a token is exactly one of ours)
kept in step by triggers. Existing tickets are indexed by `intake search reindex`.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 03:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQLITE_FTS = (
    "CREATE VIRTUAL TABLE search_fts USING fts5(tokens, content='search_documents', "
    "content_rowid='id', tokenize='ascii')",
    "CREATE TRIGGER search_documents_ai AFTER INSERT ON search_documents BEGIN "
    "INSERT INTO search_fts (rowid, tokens) VALUES (new.id, new.tokens); END",
    "CREATE TRIGGER search_documents_ad AFTER DELETE ON search_documents BEGIN "
    "INSERT INTO search_fts (search_fts, rowid, tokens) VALUES ('delete', old.id, old.tokens); "
    "END",
    "CREATE TRIGGER search_documents_au AFTER UPDATE ON search_documents BEGIN "
    "INSERT INTO search_fts (search_fts, rowid, tokens) VALUES ('delete', old.id, old.tokens); "
    "INSERT INTO search_fts (rowid, tokens) VALUES (new.id, new.tokens); END",
)


def upgrade() -> None:
    op.create_table(
        "search_documents",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("tokens", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.UniqueConstraint("ticket_id", name="uq_search_documents_ticket_id"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE search_documents ADD COLUMN document tsvector NOT NULL")
        op.execute("CREATE INDEX ix_search_documents_document ON search_documents "
                   "USING gin (document)")
    else:
        for statement in SQLITE_FTS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        for name in ("search_documents_au", "search_documents_ad", "search_documents_ai"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS search_fts")
    op.drop_table("search_documents")
