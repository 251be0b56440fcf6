"""Business calendars: hours, holidays, 调休 make-up days, DST, working-time arithmetic."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from intake.calendars import (
    Calendar,
    CalendarSpec,
    compile_calendar,
    coverage_warning,
    parse_day_key,
    parse_interval,
    statutory_years,
)
from intake.durations import format_duration, parse_duration, parse_percent

SH = ZoneInfo("Asia/Shanghai")

CN_OFFICE: dict[str, Any] = {
    "id": "cn_office", "timezone": "Asia/Shanghai",
    "hours": {"mon-fri": ["09:00-12:00", "13:30-18:00"]},
    "holidays": ["2026-01-01", "2026-01-02",
                 {"from": "2026-02-15", "to": "2026-02-23", "name": "春节"}],
    "workdays": ["2026-01-04", {"date": "2026-02-14", "hours": ["09:00-18:00"]}, "2026-02-28"],
    "workday_hours": ["09:00-12:00", "13:30-18:00"],
}


def calendar(data: dict[str, Any]) -> Calendar:
    compiled, problems = compile_calendar(CalendarSpec.model_validate(data))
    assert problems == []
    return compiled


def sh(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH)


OFFICE = calendar(CN_OFFICE)


def test_working_dates_follow_hours_holidays_and_make_up_days() -> None:
    assert OFFICE.is_workday(date(2026, 1, 5))  # a Monday
    assert not OFFICE.is_workday(date(2026, 1, 3))  # Saturday
    assert not OFFICE.is_workday(date(2026, 1, 1)) and OFFICE.is_holiday(date(2026, 1, 1))
    assert OFFICE.is_workday(date(2026, 1, 4))  # Sunday, a 调休 make-up day
    assert OFFICE.hours_on(date(2026, 1, 4)) == ((540, 720), (810, 1080))
    assert OFFICE.hours_on(date(2026, 2, 14)) == ((540, 1080),)  # its own hours
    # The 9-day Spring Festival: every day off, weekdays included.
    assert [OFFICE.is_workday(date(2026, 2, d)) for d in range(15, 24)] == [False] * 9
    assert OFFICE.is_workday(date(2026, 2, 24))


def test_in_working_time_uses_local_time_and_half_open_intervals() -> None:
    assert OFFICE.in_working_time(sh(2026, 1, 5, 9, 0))
    assert OFFICE.in_working_time(sh(2026, 1, 5, 11, 59))
    assert not OFFICE.in_working_time(sh(2026, 1, 5, 12, 0))  # [start, end)
    assert not OFFICE.in_working_time(sh(2026, 1, 5, 8, 59))
    assert OFFICE.in_working_time(sh(2026, 1, 5, 13, 30))
    # Local midnight against the UTC date: 2026-01-05 01:30 UTC is 09:30 Monday in Shanghai,
    # and 2026-01-04 23:30 UTC is Monday 07:30 (closed) though the UTC date is Sunday.
    assert OFFICE.in_working_time(datetime(2026, 1, 5, 1, 30, tzinfo=UTC))
    assert not OFFICE.in_working_time(datetime(2026, 1, 4, 23, 30, tzinfo=UTC))
    assert OFFICE.local_date(datetime(2026, 1, 4, 16, 0, tzinfo=UTC)) == date(2026, 1, 5)


@pytest.mark.parametrize(("start", "target", "due"), [
    # Inside working time: plain elapsed time.
    (sh(2026, 1, 5, 9, 0), "2h", sh(2026, 1, 5, 11, 0)),
    # Exactly at an interval's end: due at that end, not at the next opening.
    (sh(2026, 1, 5, 9, 0), "3h", sh(2026, 1, 5, 12, 0)),
    (sh(2026, 1, 5, 9, 0), "3h1m", sh(2026, 1, 5, 13, 31)),
    # Received outside working time: counting starts at the next working instant.
    (sh(2026, 1, 5, 7, 0), "30m", sh(2026, 1, 5, 9, 30)),
    (sh(2026, 1, 5, 12, 30), "30m", sh(2026, 1, 5, 14, 0)),
    # Friday evening: over the weekend to Monday (2026-01-09 is a Friday).
    (sh(2026, 1, 9, 17, 0), "2h", sh(2026, 1, 12, 10, 0)),
    # A whole working day is 7.5 hours.
    (sh(2026, 1, 5, 9, 0), "7h30m", sh(2026, 1, 5, 18, 0)),
    (sh(2026, 1, 5, 9, 0), "15h", sh(2026, 1, 6, 18, 0)),
    # New Year holidays, then the Saturday 1月3日 off; 1月4日 (Sunday) is a make-up day.
    (sh(2025, 12, 31, 17, 0), "2h", sh(2026, 1, 4, 10, 0)),
    # Spring Festival: from the Friday before, over nine days off, to the Tuesday after;
    # the make-up Saturday 2月14日 works 09:00-18:00.
    (sh(2026, 2, 13, 17, 0), "10h", sh(2026, 2, 14, 18, 0)),
    (sh(2026, 2, 13, 17, 0), "11h", sh(2026, 2, 24, 10, 0)),
])
def test_add_working(start: datetime, target: str, due: datetime) -> None:
    assert OFFICE.add_working(start, parse_duration(target)) == due


def test_working_between_is_the_inverse() -> None:
    start = sh(2026, 1, 9, 17, 0)
    due = OFFICE.add_working(start, timedelta(hours=5))
    assert OFFICE.working_between(start, due) == timedelta(hours=5)


def test_2026_statutory_days_come_from_chinesecalendar() -> None:
    cal = calendar({"id": "cn", "timezone": "Asia/Shanghai",
                    "hours": {"mon-fri": ["09:00-18:00"]}, "include": ["cn_statutory"]})
    make_up = [date(2026, 1, 4), date(2026, 2, 14), date(2026, 2, 28), date(2026, 5, 9),
               date(2026, 9, 20), date(2026, 10, 10)]
    assert all(cal.is_workday(d) for d in make_up)
    assert all(d.weekday() >= 5 for d in make_up)  # each one a weekend day that works
    assert cal.is_holiday(date(2026, 1, 1)) and not cal.is_workday(date(2026, 1, 1))
    assert not cal.is_workday(date(2026, 10, 1))
    assert not any(cal.is_workday(date(2026, 2, d)) for d in range(15, 24))
    assert 2026 in statutory_years()


def test_explicit_entries_win_over_included_ones() -> None:
    cal = calendar({"id": "cn", "timezone": "Asia/Shanghai",
                    "hours": {"mon-fri": ["09:00-18:00"]}, "include": ["cn_statutory"],
                    "holidays": ["2026-01-04"], "workdays": ["2026-10-01"]})
    assert not cal.is_workday(date(2026, 1, 4))
    assert cal.is_workday(date(2026, 10, 1))


def test_coverage_warning_for_years_chinesecalendar_lacks() -> None:
    spec = CalendarSpec.model_validate({"id": "cn", "include": ["cn_statutory"]})
    warning = coverage_warning(spec, {2026, 2999})
    assert warning is not None and "2999" in warning and "2026" not in warning
    assert coverage_warning(spec, {2026}) is None


def test_a_date_both_holiday_and_workday_is_a_conflict() -> None:
    spec = CalendarSpec.model_validate({"id": "c", "holidays": ["2026-01-04"],
                                        "workdays": ["2026-01-04"]})
    _, problems = compile_calendar(spec)
    assert problems == ["2026-01-04 is both a holiday and a workday"]


@pytest.mark.parametrize(("zone", "day", "hours"), [
    ("Europe/Berlin", date(2026, 3, 29), 3),  # spring: 02:00-03:00 does not exist
    ("Europe/Berlin", date(2026, 10, 25), 5),  # autumn: 02:00-03:00 happens twice
    ("America/Los_Angeles", date(2026, 3, 8), 3),
    ("America/Los_Angeles", date(2026, 11, 1), 5),
    ("Europe/Berlin", date(2026, 3, 30), 4),
])
def test_dst_working_time_is_real_elapsed_time(zone: str, day: date, hours: int) -> None:
    cal = calendar({"id": "x", "timezone": zone, "hours": {"mon-sun": ["01:00-05:00"]}})
    start = datetime.combine(day, datetime.min.time(), tzinfo=ZoneInfo(zone))
    end = start + timedelta(days=1)
    assert cal.working_between(start.astimezone(UTC), end.astimezone(UTC)) == timedelta(
        hours=hours)


def test_a_local_time_that_does_not_exist_is_never_working_time() -> None:
    cal = calendar({"id": "x", "timezone": "Europe/Berlin",
                    "hours": {"mon-sun": ["02:30-04:00"]}})
    # On 2026-03-29 02:30 does not exist: the interval starts when the gap ends (03:00 CEST).
    (start, end), = cal.intervals_on(date(2026, 3, 29))
    assert start == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert end == datetime(2026, 3, 29, 2, 0, tzinfo=UTC)
    assert not cal.in_working_time(datetime(2026, 3, 29, 0, 45, tzinfo=UTC))  # 01:45 CET
    gap = calendar({"id": "g", "timezone": "Europe/Berlin", "hours": {"sun": ["02:00-03:00"]}})
    assert gap.intervals_on(date(2026, 3, 29)) == []


@pytest.mark.parametrize(("data", "error"), [
    ({"id": "c", "timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"id": "c", "hours": {"mon": ["22:00-06:00"]}}, "crosses midnight: split it"),
    ({"id": "c", "hours": {"mon": ["09:00-12:00", "11:00-13:00"]}}, "intervals overlap"),
    ({"id": "c", "hours": {"mon-fri": ["09:00-12:00"], "fri": ["10:00-11:00"]}},
     "fri is given twice"),
    ({"id": "c", "hours": {"funday": ["09:00-12:00"]}}, "is not a day or range"),
    ({"id": "c", "hours": {"mon": ["9-12"]}}, "is not an interval HH:MM-HH:MM"),
    ({"id": "c", "hours": {"mon": ["09:00-24:01"]}}, "is not a time of day"),
    ({"id": "c", "include": ["us_federal"]}, "unknown include 'us_federal'"),
    ({"id": "c", "holidays": [{"from": "2026-02-10", "to": "2026-02-01"}]}, "before 'from'"),
    ({"id": "c", "colour": "red"}, "Extra inputs are not permitted"),
])
def test_bad_calendars_say_why(data: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CalendarSpec.model_validate(data)
    assert error in str(caught.value)


def test_day_keys_and_24_00() -> None:
    assert parse_day_key("mon-fri") == [0, 1, 2, 3, 4]
    assert parse_day_key("sat,sun") == [5, 6]
    assert parse_interval("18:00-24:00") == (1080, 1440)
    cal = calendar({"id": "x", "timezone": "Asia/Shanghai", "hours": {"mon": ["18:00-24:00"]}})
    assert cal.add_working(sh(2026, 1, 5, 23, 0), timedelta(hours=1)) == sh(2026, 1, 6, 0, 0)


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1h30m", 5400),
    ("50ms", 0.05), ("1d2h3m4s", 93784),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize("text", ["", "30", "h", "1h1h", "2m1h", "1.5h", "-1h", "1 h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_percentages() -> None:
    assert parse_percent("80%") == 0.8
    for bad in ("80", "0%", "120%", "abc"):
        with pytest.raises(ValueError, match="percentage"):
            parse_percent(bad)
