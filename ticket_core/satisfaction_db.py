"""The `satisfaction_requests` table (migration 0017): one row per rating link sent.

Only the SHA-256 of a link's token is stored (`token_sha256`, unique): the database, a backup
or a log of its rows never holds a working link. db.py imports this module so that one
metadata (and test_db.py's comparison with the migrations) holds every table.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import ForeignKey, Index, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from .db import Base, Id, UtcDateTime


class SatisfactionRequestRow(Base):
    """A satisfaction request (满意度邀评) of a ticket's resolution: its link and its state."""

    __tablename__ = "satisfaction_requests"
    __table_args__ = (Index("ix_satisfaction_requests_ticket_id_created_at", "ticket_id",
                            "created_at"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    ticket_id: Mapped[str] = mapped_column(Id, ForeignKey("tickets.id"), nullable=False)
    token_sha256: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    # sent, answered, expired (unanswered when its time ran out), superseded (a later
    # resolution sent a new one).
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    # The outgoing message that carried the link (its delivery shows on the ticket).
    message_id: Mapped[str | None] = mapped_column(Id)
    channel: Mapped[str] = mapped_column(String(32), nullable=False)
    account: Mapped[str] = mapped_column(String(256), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # When the link stopped working (expired or superseded), answered or not.
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


SATISFACTION_REQUESTS = cast(Table, SatisfactionRequestRow.__table__)
__all__ = ["SATISFACTION_REQUESTS", "SatisfactionRequestRow"]
