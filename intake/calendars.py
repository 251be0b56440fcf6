"""Business calendars: opening hours, holidays, 调休 make-up workdays, working-time arithmetic.

A kernel module: the router (SLA due times, `in_business_hours(...)`), the ticket core and the
agent workflow read the same calendars. The config shape (`CalendarSpec`) is validated with
pydantic; `Calendar` is the compiled form that answers "is this instant working time?" and
"when has this much working time elapsed?".

Working time is real elapsed time inside working intervals, computed on UTC instants: a local
interval `01:00-05:00` lasts 3 hours on the spring DST day and 5 on the autumn one, and a local
time that does not exist (the spring gap) is never working time.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
STATUTORY_SOURCES = ("cn_statutory",)
# How far ahead arithmetic looks for working time before it calls a calendar closed for good.
MAX_SEARCH_DAYS = 3 * 366
_INTERVAL = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")

Minutes = tuple[int, int]  # [start, end) in minutes after local midnight


def parse_interval(text: str) -> Minutes:
    """`"09:00-12:00"` → (540, 720); half-open, `24:00` allowed as an end."""
    found = _INTERVAL.match(text.strip())
    if not found:
        raise ValueError(f"'{text}' is not an interval HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in found.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60:
        raise ValueError(f"'{text}' is not a time of day (00:00 to 24:00)")
    if end <= start:
        raise ValueError(f"'{text}' crosses midnight: split it, e.g. "
                         f"'{text[:5]}-24:00' on one day and '00:00-{text[-5:]}' on the next")
    return start, end


def parse_intervals(items: list[str]) -> tuple[Minutes, ...]:
    intervals = sorted(parse_interval(i) for i in items)
    for (_, end), (start, _) in itertools.pairwise(intervals):
        if start < end:
            raise ValueError(f"intervals overlap: {items}")
    return tuple(intervals)


def parse_day_key(key: str) -> list[int]:
    """`mon-fri` → [0..4], `sat` → [5], `mon,wed` → [0, 2]."""
    days: list[int] = []
    for part in key.lower().split(","):
        ends = [p.strip() for p in part.split("-")]
        if any(e not in WEEKDAYS for e in ends) or len(ends) > 2:
            raise ValueError(f"'{key}' is not a day or range of {', '.join(WEEKDAYS)}")
        first, last = WEEKDAYS.index(ends[0]), WEEKDAYS.index(ends[-1])
        if last < first:
            raise ValueError(f"'{key}': a range runs forward (mon-fri, not fri-mon)")
        days.extend(range(first, last + 1))
    return days


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HolidaySpan(_Spec):
    from_: date = Field(alias="from")
    to: date
    name: str | None = None

    @model_validator(mode="after")
    def forward(self) -> HolidaySpan:
        if self.to < self.from_:
            raise ValueError("'to' is before 'from'")
        return self


class HolidayDay(_Spec):
    date: date
    name: str | None = None


class MakeUpDay(_Spec):
    date: date
    hours: list[str] | None = None

    @field_validator("hours")
    @classmethod
    def valid_hours(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            parse_intervals(value)
        return value


class CalendarSpec(_Spec):
    """One entry of the `calendars` section."""

    id: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]
    name: str | None = None
    timezone: str = "UTC"
    hours: dict[str, list[str]] = Field(default_factory=dict)
    holidays: list[date | HolidaySpan | HolidayDay] = Field(default_factory=list)
    workdays: list[date | MakeUpDay] = Field(default_factory=list)
    workday_hours: list[str] | None = None
    include: list[str] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone '{value}' (an IANA name such as "
                             "Asia/Shanghai)") from exc
        return value

    @field_validator("hours")
    @classmethod
    def valid_week(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        seen: set[int] = set()
        for key, items in value.items():
            for day in parse_day_key(key):
                if day in seen:
                    raise ValueError(f"{WEEKDAYS[day]} is given twice")
                seen.add(day)
            parse_intervals(items)
        return value

    @field_validator("workday_hours")
    @classmethod
    def valid_workday_hours(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            parse_intervals(value)
        return value

    @field_validator("include")
    @classmethod
    def known_sources(cls, value: list[str]) -> list[str]:
        for source in value:
            if source not in STATUTORY_SOURCES:
                raise ValueError(f"unknown include '{source}' (known: "
                                 f"{', '.join(STATUTORY_SOURCES)})")
        return value


INTERVALS_CACHED = 4096  # dates per calendar: eleven years of days


@dataclass(frozen=True)
class Calendar:
    """A compiled calendar: which local dates work, with which intervals, in which zone."""

    id: str
    zone: ZoneInfo
    week: tuple[tuple[Minutes, ...], ...]  # per weekday, mon first; () closed
    holidays: dict[date, str | None] = field(default_factory=dict)
    make_up: dict[date, tuple[Minutes, ...]] = field(default_factory=dict)
    # intervals_on's answers: a date's intervals never change, and every decision, SLA due
    # time and `in_business_hours` asks for the same few dates.
    _intervals: dict[date, list[tuple[datetime, datetime]]] = field(
        default_factory=dict, compare=False, repr=False)

    @property
    def always_open(self) -> bool:
        return all(day == ((0, 1440),) for day in self.week) and not self.holidays

    def local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.zone).date()

    def is_holiday(self, day: date) -> bool:
        return day in self.holidays and day not in self.make_up

    def is_workday(self, day: date) -> bool:
        return bool(self.hours_on(day))

    def hours_on(self, day: date) -> tuple[Minutes, ...]:
        if day in self.make_up:
            return self.make_up[day]
        if day in self.holidays:
            return ()
        return self.week[day.weekday()]

    def intervals_on(self, day: date) -> list[tuple[datetime, datetime]]:
        """The day's working intervals as UTC instants (empty ones, all in a DST gap, left out).
        The list is shared: do not change it."""
        known = self._intervals.get(day)
        if known is not None:
            return known
        if len(self._intervals) >= INTERVALS_CACHED:
            self._intervals.clear()
        out = self._intervals[day] = self._compute_intervals(day)
        return out

    def _compute_intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        out = []
        for start, end in self.hours_on(day):
            a = self._instant(day, start, earliest=True)
            b = self._instant(day, end, earliest=False)
            if b > a:
                out.append((a, b))
        return out

    def _instant(self, day: date, minutes: int, *, earliest: bool) -> datetime:
        """A local wall time as a UTC instant; in a DST gap: the instant the gap ends (a time
        that does not exist is not working time); in a repeated hour: the first occurrence
        for a start, the second for an end (the whole wall-clock range counts)."""
        if minutes >= 1440:
            day, minutes = day + timedelta(days=1), minutes - 1440
        wall = datetime.combine(day, time(minutes // 60, minutes % 60))
        first = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        if first.astimezone(self.zone).replace(tzinfo=None) != wall:
            # Does not exist: `second` lies before the gap, `first` after it; find its end.
            low, high = min(first, second), max(first, second)
            while high - low > timedelta(seconds=1):
                mid = low + (high - low) / 2
                if mid.astimezone(self.zone).replace(tzinfo=None) >= wall:
                    high = mid
                else:
                    low = mid
            return high.replace(microsecond=0)
        return min(first, second) if earliest else max(first, second)

    def in_working_time(self, instant: datetime) -> bool:
        local = self.local_date(instant)
        for day in (local - timedelta(days=1), local):
            for a, b in self.intervals_on(day):
                if a <= instant < b:
                    return True
        return False

    def working_intervals(self, since: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Working intervals (UTC) that end after `since`, in order, clipped to start at it."""
        day = self.local_date(since) - timedelta(days=1)
        for _ in range(MAX_SEARCH_DAYS):
            for a, b in self.intervals_on(day):
                if b > since:
                    yield max(a, since), b
            day += timedelta(days=1)

    def add_working(self, start: datetime, target: timedelta) -> datetime:
        """The earliest instant at which `target` of working time has elapsed since `start`.

        Counting starts at the next working instant; a target that runs out exactly at an
        interval's end is due at that end, not at the next opening.
        """
        remaining = target
        for a, b in self.working_intervals(start):
            if remaining <= b - a:
                return a + remaining
            remaining -= b - a
        raise ValueError(f"calendar '{self.id}' has no working time within "
                         f"{MAX_SEARCH_DAYS} days of {start.isoformat()}")

    def working_between(self, start: datetime, end: datetime) -> timedelta:
        total = timedelta()
        for a, b in self.working_intervals(start):
            if a >= end:
                break
            total += min(b, end) - a
        return total


ALWAYS = Calendar(id="always", zone=ZoneInfo("UTC"), week=((((0, 1440),),) * 7))


def _statutory() -> tuple[dict[date, str | None], set[date]]:
    """China's State Council days off and make-up workdays, from the pinned chinesecalendar."""
    from chinese_calendar import constants

    holidays = {day: h if isinstance(h, str) else getattr(h, "value", None)
                for day, h in constants.holidays.items()}
    workdays = set(constants.workdays)
    return holidays, workdays


def statutory_years() -> set[int]:
    """The years chinesecalendar covers (it raises NotImplementedError for the others)."""
    holidays, workdays = _statutory()
    return {d.year for d in holidays} | {d.year for d in workdays}


def compile_calendar(spec: CalendarSpec) -> tuple[Calendar, list[str]]:
    """The calendar and its problems: dates both holiday and workday (`calendar-conflict`)."""
    problems: list[str] = []
    week: list[tuple[Minutes, ...]] = [() for _ in WEEKDAYS]
    for key, items in spec.hours.items():
        for day in parse_day_key(key):
            week[day] = parse_intervals(items)
    default_hours = (parse_intervals(spec.workday_hours) if spec.workday_hours is not None
                     else week[0])
    holidays: dict[date, str | None] = {}
    make_up: dict[date, tuple[Minutes, ...]] = {}
    if "cn_statutory" in spec.include:
        official, official_workdays = _statutory()
        holidays.update(official)
        make_up.update({d: default_hours for d in official_workdays})
    explicit_holidays: dict[date, str | None] = {}
    for entry in spec.holidays:
        if isinstance(entry, HolidaySpan):
            current: date = entry.from_
            while current <= entry.to:
                explicit_holidays[current] = entry.name
                current += timedelta(days=1)
        elif isinstance(entry, HolidayDay):
            explicit_holidays[entry.date] = entry.name
        else:
            explicit_holidays[entry] = None
    explicit_workdays: dict[date, tuple[Minutes, ...]] = {}
    for item in spec.workdays:
        if isinstance(item, MakeUpDay):
            explicit_workdays[item.date] = (parse_intervals(item.hours) if item.hours
                                            is not None else default_hours)
        else:
            explicit_workdays[item] = default_hours
    for both in sorted(set(explicit_holidays) & set(explicit_workdays)):
        problems.append(f"{both.isoformat()} is both a holiday and a workday")
    # Explicit entries win over the included ones.
    for off in explicit_holidays:
        make_up.pop(off, None)
    for working in explicit_workdays:
        holidays.pop(working, None)
    holidays.update(explicit_holidays)
    make_up.update(explicit_workdays)
    return Calendar(id=spec.id, zone=ZoneInfo(spec.timezone), week=tuple(week),
                    holidays=holidays, make_up=make_up), problems


def coverage_warning(spec: CalendarSpec, years: set[int]) -> str | None:
    """`calendar-coverage`: the years asked about that cn_statutory does not know."""
    if "cn_statutory" not in spec.include:
        return None
    missing = sorted(years - statutory_years())
    if not missing:
        return None
    return (f"calendar '{spec.id}': cn_statutory has no data for {', '.join(map(str, missing))};"
            " those years count only the days written out here")


def as_spec(data: Any) -> CalendarSpec:
    return CalendarSpec.model_validate(data)
