"""SLA clocks from a ticket's own history: business time elapsed, paused intervals, due times.

A clock is where it started, the intervals it was paused (`pause_on` statuses), and a target
in business time on a calendar. Due times are computed from those facts, never carried
forward: a change of priority, category, desk or policy gives a new target or calendar and
the same history, so time already spent and time paused are neither forgotten nor counted
twice (GLPI restarts the clock on a policy change; this does not).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from intake.calendars import ALWAYS, Calendar


@dataclass(frozen=True)
class Pause:
    """A paused interval; `end` None: paused now."""

    start: datetime
    end: datetime | None = None


@dataclass(frozen=True)
class ClockState:
    """A clock read at `now`: elapsed business time, the due time (None while paused), and
    whether it is paused."""

    elapsed: timedelta
    due_at: datetime | None
    paused: bool

    def breached(self, now: datetime) -> bool:
        return self.due_at is not None and self.due_at <= now


def merged(pauses: Iterable[Pause]) -> list[Pause]:
    """Pauses in order, overlapping or touching ones joined (an open one swallows the rest)."""
    result: list[Pause] = []
    for pause in sorted(pauses, key=lambda p: p.start):
        if result and (result[-1].end is None or pause.start <= result[-1].end):
            last = result[-1]
            end = None if last.end is None or pause.end is None else max(last.end, pause.end)
            result[-1] = Pause(last.start, end)
        else:
            result.append(pause)
    return result


def running(start: datetime, pauses: Sequence[Pause]) -> Iterator[tuple[datetime,
                                                                        datetime | None]]:
    """The intervals the clock runs, from `start`: between the pauses, the last one open."""
    since = start
    for pause in merged(pauses):
        end = pause.end
        if end is not None and end <= since:
            continue
        if pause.start > since:
            yield since, pause.start
        if end is None:
            return
        since = max(since, end)
    yield since, None


def read(start: datetime, target: timedelta, now: datetime, pauses: Sequence[Pause] = (),
         calendar: Calendar | None = None) -> ClockState:
    """The clock at `now`. The due time is exact also when it lies in the past (a breach is
    recorded at the business-correct minute, not when it was noticed); None while a pause
    that began before the target ran out is still open."""
    calendar = calendar or ALWAYS
    joined = merged(pauses)
    elapsed = timedelta()
    remaining = target
    due: datetime | None = None
    for begin, end in running(start, joined):
        if begin < now:
            elapsed += calendar.working_between(begin, now if end is None else min(end, now))
        if due is not None:
            continue
        span = None if end is None else calendar.working_between(begin, end)
        if span is None or remaining <= span:
            due = calendar.add_working(begin, remaining)
        else:
            remaining -= span
    paused = any(p.start <= now and (p.end is None or now < p.end) for p in joined)
    return ClockState(elapsed=elapsed, due_at=due, paused=paused)
