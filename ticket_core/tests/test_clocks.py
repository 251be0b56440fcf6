"""SLA clocks on the example's cn_office calendar: Mid-autumn and National Day, the make-up
Saturday, the lunch break, pauses, and a re-targeted clock that keeps its history."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from intake.calendars import Calendar, as_spec, compile_calendar
from intake.config import load_document
from ticket_core.clocks import Pause, merged, read

SHANGHAI = ZoneInfo("Asia/Shanghai")
EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "intake.example.yaml"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


@pytest.fixture(scope="module")
def office() -> Calendar:
    spec = next(c for c in load_document(EXAMPLE).section("calendars") or []
                if c["id"] == "cn_office")
    calendar, _ = compile_calendar(as_spec(spec))
    return calendar


def test_filed_thursday_1700_before_mid_autumn_first_response_due_monday_1000(
        office: Calendar) -> None:
    filed = at("2026-09-24T17:00")
    state = read(filed, timedelta(hours=2), filed, calendar=office)
    assert state.due_at == at("2026-09-28T10:00")
    assert not state.paused and state.elapsed == timedelta()
    # Read on the holiday: one business hour spent (17:00-18:00 on Thursday), still due Monday.
    later = read(filed, timedelta(hours=2), at("2026-09-26T12:00"), calendar=office)
    assert later.elapsed == timedelta(hours=1) and later.due_at == at("2026-09-28T10:00")


def test_the_lunch_break_and_the_make_up_saturday_count_as_the_calendar_says(
        office: Calendar) -> None:
    # 11:30 + 1 h: 30 minutes before lunch, 30 after it.
    assert read(at("2026-09-22T11:30"), timedelta(hours=1), at("2026-09-22T11:30"),
                calendar=office).due_at == at("2026-09-22T14:00")
    # Friday 2026-09-18 17:00 + 4 h: Saturday 09-19 rests, Sunday 09-20 is a make-up day
    # (17:00-18:00, then 09:00-12:00 on the Sunday).
    assert read(at("2026-09-18T17:00"), timedelta(hours=4), at("2026-09-18T17:00"),
                calendar=office).due_at == at("2026-09-20T12:00")
    # National Day: 09-30 17:00 + 2 h → the week off, then 10-08 10:00.
    assert read(at("2026-09-30T17:00"), timedelta(hours=2), at("2026-09-30T17:00"),
                calendar=office).due_at == at("2026-10-08T10:00")


def test_a_pause_stops_the_clock_and_moves_the_due_time_by_the_business_time_paused(
        office: Calendar) -> None:
    start = at("2026-09-22T09:00")
    target = timedelta(hours=4)  # unpaused: 09:00-12:00 + 13:30-14:30
    assert read(start, target, start, calendar=office).due_at == at("2026-09-22T14:30")
    # Pending from 10:00, still at 16:00: paused, no due time, one business hour spent.
    open_pause = [Pause(at("2026-09-22T10:00"))]
    state = read(start, target, at("2026-09-22T16:00"), open_pause, office)
    assert state.paused and state.due_at is None and state.elapsed == timedelta(hours=1)
    # Back to open at 16:00: 3 h left → 16:00-18:00, then 09:00-10:00 the next day.
    done = [Pause(at("2026-09-22T10:00"), at("2026-09-22T16:00"))]
    state = read(start, target, at("2026-09-22T16:00"), done, office)
    assert not state.paused and state.due_at == at("2026-09-23T10:00")


def test_a_breach_is_dated_at_the_business_correct_minute_even_when_read_later(
        office: Calendar) -> None:
    start = at("2026-09-22T09:00")
    state = read(start, timedelta(hours=2), at("2026-09-29T09:00"), calendar=office)
    assert state.due_at == at("2026-09-22T11:00") and state.breached(at("2026-09-29T09:00"))
    # A pause after the target ran out does not un-breach it.
    state = read(start, timedelta(hours=2), at("2026-09-22T15:00"),
                 [Pause(at("2026-09-22T14:00"))], office)
    assert state.paused and state.due_at == at("2026-09-22T11:00")


def test_a_new_target_keeps_the_time_spent_and_paused(office: Calendar) -> None:
    start = at("2026-09-22T09:00")
    history = [Pause(at("2026-09-22T10:00"), at("2026-09-22T14:00"))]
    now = at("2026-09-22T15:00")
    normal = read(start, timedelta(hours=4), now, history, office)   # priority normal
    urgent = read(start, timedelta(hours=2), now, history, office)   # raised to urgent
    assert normal.elapsed == urgent.elapsed == timedelta(hours=2)
    # 09:00-10:00 ran, paused till 14:00: 3 h more → 17:00; 1 h more → 15:00.
    assert normal.due_at == at("2026-09-22T17:00") and not normal.breached(now)
    assert urgent.due_at == at("2026-09-22T15:00") and urgent.breached(now)


def test_pauses_overlapping_or_unordered_are_joined() -> None:
    base = datetime(2026, 9, 22, tzinfo=SHANGHAI)
    h = timedelta(hours=1)
    joined = merged([Pause(base + 3 * h, base + 5 * h), Pause(base, base + h),
                     Pause(base + 4 * h, base + 6 * h), Pause(base + 8 * h)])
    assert joined == [Pause(base, base + h), Pause(base + 3 * h, base + 6 * h),
                      Pause(base + 8 * h)]
    # On a 24/7 clock: 10 h target, 1 + 3 h paused before it ran out.
    assert read(base, 10 * h, base + 9 * h, joined[:2]).due_at == base + 14 * h
