"""The table of quick replies managed through the API (migration 0013).

Those of `tickets.quick_replies` stay in the config (read-only); these are the supervisors'
own, for their desks (quick_replies.py). db.py imports this module so that one metadata (and
test_db.py's comparison with the migrations) holds every table.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import Index, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column

from .db import Base, Id, Json, UtcDateTime


class QuickReplyRow(Base):
    """A canned answer: `desks` empty means every desk (admins only may make such)."""

    __tablename__ = "quick_replies"
    __table_args__ = (Index("ix_quick_replies_created_at_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    shortcut: Mapped[str | None] = mapped_column(String(32))
    desks: Mapped[list[str]] = mapped_column(Json, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


QUICK_REPLIES = cast(Table, QuickReplyRow.__table__)
__all__ = ["QUICK_REPLIES", "QuickReplyRow"]
