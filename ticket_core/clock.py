"""The ticket core's one clock for domain time: when timers are due, when a ticket was
acknowledged or a step completed. Tests inject a `ManualClock` and move it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """An aware UTC instant."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """Stands still until told: `set(instant)` or `advance(timedelta)`."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, instant: datetime) -> None:
        if instant.tzinfo is None:
            raise ValueError("naive datetime: use aware UTC instants")
        self._now = instant.astimezone(UTC)

    def advance(self, by: timedelta) -> datetime:
        self._now += by
        return self._now


class TestClock(ManualClock):
    """The test clock of issue 17 (`INTAKE_TEST_CLOCK=1`): a ManualClock that
    `POST /api/v1/test-clock` moves forward (clock_api.py). Only domain time stands still;
    transport time (HTTP timeouts, back-off) stays real."""

    __test__ = False  # not a pytest test class, whatever its name says
