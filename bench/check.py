"""The exactly-once check and the read-back of `persisted_at` from the ticket core's database.

Every key whose send was acknowledged (HTTP 201, a broker confirm) must be stored exactly once;
a key whose send failed may be stored at most once (the gateway may have taken it before the
error); a stored key that was never sent means two scenarios' keys collided. Any of these fails
the scenario.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ticket_core.db import Message as MessageRow


class ExactlyOnceFailed(AssertionError):
    """A benchmark lost or doubled messages: its figures mean nothing."""


@dataclass
class CheckResult:
    sent: int
    acknowledged: int
    stored: int
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.unexpected)

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "sent": self.sent, "acknowledged": self.acknowledged,
                "stored": self.stored, "missing": len(self.missing),
                "duplicated": len(self.duplicated), "unexpected": len(self.unexpected),
                "examples": (self.missing + self.duplicated + self.unexpected)[:5]}

    def describe(self) -> str:
        return (f"sent {self.sent}, acknowledged {self.acknowledged}, stored {self.stored}: "
                f"{len(self.missing)} missing, {len(self.duplicated)} stored more than once, "
                f"{len(self.unexpected)} never sent (e.g. "
                f"{(self.missing + self.duplicated + self.unexpected)[:3]})")


def check_exactly_once(acknowledged: Iterable[str], failed: Iterable[str],
                       stored: Iterable[str]) -> CheckResult:
    """Compare the keys sent (acknowledged or failed) with the keys stored (one per row)."""
    acked = set(acknowledged)
    failed_set = set(failed) - acked
    counts = Counter(stored)
    return CheckResult(
        sent=len(acked) + len(failed_set),
        acknowledged=len(acked),
        stored=sum(counts.values()),
        missing=sorted(acked - counts.keys()),
        duplicated=sorted(key for key, n in counts.items() if n > 1),
        unexpected=sorted(key for key in counts if key not in acked and key not in failed_set),
    )


def _starts(prefix: str):  # type: ignore[no-untyped-def]
    # LIKE rather than a range: PostgreSQL's locale collation does not order keys bytewise.
    return MessageRow.idempotency_key.startswith(prefix, autoescape=True)


@dataclass
class Persisted:
    key: str
    received_at: datetime
    persisted_at: datetime


async def count_stored(engine: AsyncEngine, prefix: str) -> int:
    async with engine.connect() as connection:
        result = await connection.execute(
            select(func.count()).select_from(MessageRow).where(_starts(prefix)))
        return int(result.scalar_one())


async def wait_stored(engine: AsyncEngine, prefix: str, expected: int, *,
                      stall_s: float = 15.0, interval_s: float = 0.2) -> int:
    """Poll until `expected` rows carry the prefix, or nothing new arrived for `stall_s`."""
    seen, last_change = -1, time.monotonic()
    while True:
        count = await count_stored(engine, prefix)
        if count >= expected:
            return count
        if count != seen:
            seen, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            return count
        await asyncio.sleep(interval_s)


async def read_persisted(engine: AsyncEngine, prefix: str) -> list[Persisted]:
    async with engine.connect() as connection:
        result = await connection.execute(
            select(MessageRow.idempotency_key, MessageRow.received_at, MessageRow.persisted_at)
            .where(_starts(prefix)))
        return [Persisted(*row) for row in result.all()]
