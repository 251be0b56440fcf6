"""Open loop sends on schedule whatever the answers do; closed loop keeps C requests in flight."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from bench.load import closed_loop, open_loop, schedule


def test_schedule_spaces_requests_by_one_over_the_rate() -> None:
    assert schedule(4, 2.0, 100.0) == [100.0, 100.5, 101.0, 101.5]
    with pytest.raises(ValueError):
        schedule(1, 0, 0.0)


async def test_open_loop_sends_on_schedule_even_when_answers_are_slow() -> None:
    started: dict[int, tuple[float, float]] = {}

    async def slow_send(i: int, due: float) -> None:
        started[i] = (due, time.time())
        await asyncio.sleep(0.5)  # the gateway answers far slower than requests are due

    began = time.monotonic()
    stats = await open_loop(slow_send, 20, 100.0)
    elapsed = time.monotonic() - began
    assert len(started) == 20
    # Sent within a few ms of their slot, not after the previous answer.
    assert max(actual - due for due, actual in started.values()) < 0.05
    dues = [started[i][0] for i in range(20)]
    assert all(abs((b - a) - 0.01) < 1e-6 for a, b in itertools.pairwise(dues))
    # 20 requests at 100/s plus one slow answer; a closed loop of one would need 10 s.
    assert elapsed < 1.5
    assert stats.finished - stats.started >= 0.5


async def test_open_loop_with_a_fake_clock_reports_how_far_it_fell_behind() -> None:
    now = [1000.0]
    sleeps: list[float] = []

    def clock() -> float:
        return now[0]

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds
        await asyncio.sleep(0)  # let the started sends run, as a real sleep would

    async def send(i: int, due: float) -> None:
        if i == 2:
            now[0] += 0.35  # the sender's own work held the loop up

    stats = await open_loop(send, 6, 10.0, clock=clock, sleep=sleep)
    assert stats.started == pytest.approx(1000.05)
    # Send 2 ran during the wait for slot 3 and held the loop 0.35 s: slot 4 (due +0.4 s) went
    # out at +0.65 s, 0.25 s late, and slot 5 right after it: no pause to "catch up" with.
    assert stats.max_lag_s == pytest.approx(0.25)
    assert len(sleeps) == 4


async def test_closed_loop_keeps_exactly_c_requests_in_flight() -> None:
    in_flight = 0
    peak = 0
    done: list[int] = []

    async def send(i: int, _: float) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        done.append(i)

    began = time.monotonic()
    await closed_loop(send, 40, 4)
    assert sorted(done) == list(range(40))
    assert peak == 4
    assert time.monotonic() - began >= 0.2  # 40 / 4 × 20 ms
