"""The test clock over HTTP (issue 17): `GET`/`POST /api/v1/test-clock`.

With `INTAKE_TEST_CLOCK=1` the ticket core's domain clock (timers, acknowledgements, status
changes) stands still at `INTAKE_TEST_CLOCK_START` (ISO 8601, default: the start) and moves
only by `POST /api/v1/test-clock {"advance": "PT30M"}` or `{"to": "<ISO time>"}`, forward only
(backwards: 422 `clock_backwards`). The answer comes once every timer due by then has fired,
each at its own due time (the clock steps from one due time to the next, so an automatic
resolve due on day 7 plans its close from day 7, not from where the clock ends). Without the
variable both answer 404 `not_found`, as an unknown path does.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic_settings import BaseSettings, SettingsConfigDict

from .api import PREFIX, ApiError, _answers_errors, json_response
from .clock import TestClock
from .scheduler import BATCH, Scheduler, fire_due
from .schemas import TestClockRequest, TestClockView
from .store import TicketStore
from .timing_api import _body

PATH = f"{PREFIX}/test-clock"
# An advance waits at most this long for timers another transaction holds (PostgreSQL).
SETTLE_TIMEOUT_S = 30.0
# Days, hours, minutes, seconds (weeks too); years and months have no fixed length: refused.
_ISO_DURATION = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?"
                           r"(?:(\d+(?:\.\d+)?)S)?)?")


class ClockSettings(BaseSettings):
    """`INTAKE_TEST_CLOCK`, `INTAKE_TEST_CLOCK_START`."""

    model_config = SettingsConfigDict(env_prefix="INTAKE_", extra="ignore", frozen=True)

    test_clock: bool = False
    test_clock_start: datetime | None = None


def clock_from_environment() -> TestClock | None:
    """The test clock when `INTAKE_TEST_CLOCK` is on; None for the system clock."""
    settings = ClockSettings()
    if not settings.test_clock:
        return None
    start = settings.test_clock_start
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)  # an ISO time without offset: UTC
    return TestClock(start.astimezone(UTC) if start is not None else None)


def parse_iso_duration(text: str) -> timedelta:
    """`PT30M`, `P7D`, `P1DT2H30M`, `PT0.5S` → a timedelta; ValueError otherwise."""
    found = _ISO_DURATION.fullmatch(text.strip().upper()) if text else None
    if found is None or text.strip().upper() in ("P", "PT"):
        raise ValueError(f"{text!r} is not an ISO 8601 duration such as PT30M or P7D")
    weeks, days, hours, minutes, seconds = (found.group(i) for i in range(1, 6))
    try:
        return timedelta(weeks=int(weeks or 0), days=int(days or 0), hours=int(hours or 0),
                         minutes=int(minutes or 0), seconds=float(seconds or 0))
    except OverflowError as exc:
        raise ValueError(f"{text!r} is longer than a clock can go") from exc


async def advance_to(store: TicketStore, clock: TestClock, target: datetime) -> int:
    """Move `clock` to `target`, firing every timer due by then at its own due time; the
    number fired."""
    scheduler = Scheduler(store)
    fired = 0
    deadline = asyncio.get_running_loop().time() + SETTLE_TIMEOUT_S
    while True:
        due = await scheduler.next_due()
        if due is None or due > target:
            break
        clock.set(max(due, clock.now()))
        now = clock.now()
        round_fired: int = await store.write(
            lambda c, at=now: fire_due(c, at, store.timelines, BATCH))
        fired += round_fired
        if not round_fired:  # held by another transaction (the scheduler task): wait for it
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
    clock.set(max(target, clock.now()))
    return fired


def clock_routes(store: TicketStore) -> list[web.RouteDef]:
    lock = asyncio.Lock()  # one advance at a time: each steps the same clock

    def test_clock() -> TestClock:
        if not isinstance(store.clock, TestClock):
            raise ApiError(404, "not_found", f"No such endpoint: {PATH} (the test clock is "
                           "off: set INTAKE_TEST_CLOCK=1).")
        # TODO(issue 17): admin only, once tokens carry roles (only the admin token exists).
        return store.clock

    @_answers_errors
    async def read(request: web.Request) -> web.StreamResponse:
        return json_response(TestClockView(now=test_clock().now()))

    @_answers_errors
    async def move(request: web.Request) -> web.StreamResponse:
        clock = test_clock()
        body = await _body(request, TestClockRequest)
        if (body.advance is None) == (body.to is None):
            raise ApiError(422, "invalid_body", "Give exactly one of `advance` and `to`.",
                           {"advance": "an ISO 8601 duration such as PT30M",
                            "to": "an ISO 8601 time"})
        async with lock:
            if body.advance is not None:
                try:
                    target = clock.now() + parse_iso_duration(body.advance)
                except (ValueError, OverflowError) as exc:
                    raise ApiError(422, "invalid_body", "`advance` is not a duration.",
                                   {"advance": str(exc)}) from exc
            else:
                assert body.to is not None
                to = body.to if body.to.tzinfo is not None else body.to.replace(tzinfo=UTC)
                target = to.astimezone(UTC)
                if target < clock.now():
                    raise ApiError(422, "clock_backwards", "The test clock only moves "
                                   "forward.", {"to": f"not before {clock.now().isoformat()}"})
            fired = await advance_to(store, clock, target)
        return json_response(TestClockView(now=clock.now(), fired=fired))

    return [web.get(PATH, read), web.post(PATH, move)]


def clock_paths(ok: Any, error: Any, ref: str, unauthorized: Any,
                unavailable: Any) -> dict[str, Any]:
    """The OpenAPI path of the test clock (openapi.py passes its helpers)."""
    off = error("The test clock is off (INTAKE_TEST_CLOCK is not set)", ["not_found"])
    return {PATH: {
        "get": {
            "operationId": "getTestClock",
            "summary": "The test clock's time (only with INTAKE_TEST_CLOCK=1)",
            "responses": {"200": ok("TestClockView", "The domain time"),
                          "401": unauthorized, "404": off, "503": unavailable},
        },
        "post": {
            "operationId": "moveTestClock",
            "summary": "Move the test clock forward and fire every timer due by then "
                       "(admin; only with INTAKE_TEST_CLOCK=1)",
            "description": "`{\"advance\": \"PT30M\"}` (an ISO 8601 duration of weeks, days, "
                           "hours, minutes, seconds) or `{\"to\": \"<ISO time>\"}`. Answers "
                           "once every timer due by then has fired, each at its due time.",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": ref.format(model="TestClockRequest")},
                "example": {"advance": "P7D"}}}},
            "responses": {"200": ok("TestClockView", "The domain time now"),
                          "401": unauthorized, "404": off,
                          "422": error("Not a duration or time, or a time before the "
                                       "clock's", ["invalid_body", "clock_backwards"]),
                          "503": unavailable},
        }}}
