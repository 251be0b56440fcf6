"""The supervisor restarts failed components with backoff and reports their states."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog

from intake.metrics import COMPONENT_UP
from intake.supervisor import Ready, Supervisor
from tests.support import eventually


def gauge(service: str, component: str) -> float:
    return COMPONENT_UP.labels(service, component)._value.get()  # type: ignore[no-any-return]


async def test_a_component_that_fails_is_restarted_until_it_stays_up() -> None:
    supervisor = Supervisor("sv-restart", first_delay_s=0.01, max_delay_s=0.02)
    attempts = 0
    serving = asyncio.Event()

    async def flaky(ready: Ready) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 4:
            raise ConnectionRefusedError(f"attempt {attempts}")
        ready()
        serving.set()
        await asyncio.Event().wait()

    supervisor.start("listener", flaky)
    try:
        await asyncio.wait_for(serving.wait(), 10)
        assert attempts == 4
        state = supervisor.states()["listener"]
        assert state.state == "up"
        assert state.restarts == 3
        assert "attempt 3" in (state.error or "")  # the last failure stays readable
        assert supervisor.problems() == {}
        assert gauge("sv-restart", "listener") == 1
    finally:
        await supervisor.stop()
    assert gauge("sv-restart", "listener") == 0


async def test_a_component_that_ends_is_started_again() -> None:
    supervisor = Supervisor("sv-ends", first_delay_s=0.01)
    runs = 0

    async def short_lived(ready: Ready) -> None:
        nonlocal runs
        runs += 1
        ready()

    supervisor.start("task", short_lived)
    try:
        await eventually(lambda: runs >= 3)
    finally:
        await supervisor.stop()


async def test_a_critical_component_down_is_a_problem_and_a_non_critical_one_is_not() -> None:
    supervisor = Supervisor("sv-problems", first_delay_s=0.01, max_delay_s=0.02)

    async def broken(ready: Ready) -> None:
        raise OSError("port 2525 in use")

    supervisor.start("smtp", broken)
    supervisor.start("imap:b@example.com", broken, critical=False)
    try:
        await eventually(lambda: supervisor.states()["imap:b@example.com"].state == "down"
                         and supervisor.states()["smtp"].state == "down")
        problems = supervisor.problems()
        assert list(problems) == ["smtp"]
        assert "port 2525 in use" in problems["smtp"]
        assert supervisor.states()["imap:b@example.com"].critical is False
        assert gauge("sv-problems", "smtp") == 0
    finally:
        await supervisor.stop()


async def test_a_component_not_yet_up_is_starting() -> None:
    supervisor = Supervisor("sv-starting")
    release = asyncio.Event()

    async def slow(ready: Ready) -> None:
        await release.wait()
        ready()
        await asyncio.Event().wait()

    supervisor.start("consumer:router", slow)
    try:
        await asyncio.sleep(0)
        assert supervisor.states()["consumer:router"].state == "starting"
        assert supervisor.problems() == {"consumer:router": "starting"}
        release.set()
        assert await supervisor.wait_up("consumer:router", timeout=5)
        assert supervisor.problems() == {}
    finally:
        await supervisor.stop()


async def test_state_changes_are_logged_once_not_per_retry() -> None:
    supervisor = Supervisor("sv-logs", first_delay_s=0.005, max_delay_s=0.005)
    attempts = 0
    up = asyncio.Event()

    async def flaky(ready: Ready) -> None:
        nonlocal attempts
        attempts += 1
        if attempts in (1, 2, 3, 4, 5):
            raise ConnectionResetError("broker gone")
        ready()
        up.set()
        await asyncio.Event().wait()

    with structlog.testing.capture_logs() as logs:
        supervisor.start("connection", flaky)
        try:
            await asyncio.wait_for(up.wait(), 10)
        finally:
            await supervisor.stop()
    events = [line["event"] for line in logs if line.get("name") == "connection"]
    assert attempts == 6
    assert events == ["component_down", "component_up"]


async def test_backoff_grows_and_starts_over_once_up() -> None:
    supervisor = Supervisor("sv-backoff", first_delay_s=0.01, max_delay_s=0.04)
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, *args: Any) -> Any:
        pauses.append(delay)
        return await real_sleep(0)

    attempts = 0
    finished = asyncio.Event()

    async def pattern(ready: Ready) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 5:
            ready()  # up once: the next pause is the first one again
        if attempts == 7:
            finished.set()
            await asyncio.Event().wait()
        raise RuntimeError("failing")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("intake.supervisor.asyncio.sleep", recording_sleep)
        supervisor.start("c", pattern)
        await asyncio.wait_for(finished.wait(), 10)
    await supervisor.stop()
    # base pauses (jitter adds up to half again): 0.01, 0.02, 0.04, 0.04 (cap), then up, 0.01
    bases = [0.01, 0.02, 0.04, 0.04, 0.01, 0.02]
    assert len(pauses) == len(bases)
    for pause, base in zip(pauses, bases, strict=True):
        assert base <= pause <= base * 1.5


async def test_degrade_makes_a_running_component_a_problem_until_restored() -> None:
    supervisor = Supervisor("sv-degrade")

    async def steady(ready: Ready) -> None:
        ready()
        await asyncio.Event().wait()

    supervisor.start("consumer:ticket_core", steady)
    try:
        assert await supervisor.wait_up("consumer:ticket_core", timeout=5)
        supervisor.degrade("consumer:ticket_core", "holding messages: storage_unavailable")
        assert supervisor.problems() == {
            "consumer:ticket_core": "degraded: holding messages: storage_unavailable"}
        supervisor.restore("consumer:ticket_core")
        assert supervisor.problems() == {}
    finally:
        await supervisor.stop()


async def test_stop_cancels_every_component_and_waits_for_it() -> None:
    supervisor = Supervisor("sv-stop")
    cleaned: list[str] = []

    def forever(name: str) -> Any:
        async def run(ready: Ready) -> None:
            ready()
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.sleep(0.01)  # cleanup that takes a moment
                cleaned.append(name)
        return run

    supervisor.start("a", forever("a"))
    supervisor.start("b", forever("b"))
    await supervisor.wait_up("a", 5)
    await supervisor.wait_up("b", 5)
    await supervisor.stop()
    assert sorted(cleaned) == ["a", "b"]


async def test_a_name_is_supervised_once_and_can_be_removed() -> None:
    supervisor = Supervisor("sv-names")

    async def steady(ready: Ready) -> None:
        ready()
        await asyncio.Event().wait()

    supervisor.start("x", steady)
    with pytest.raises(ValueError):
        supervisor.start("x", steady)
    await supervisor.remove("x")
    assert "x" not in supervisor.states()
    supervisor.start("x", steady)
    await supervisor.stop()
