"""The test clock over HTTP (issue 17): off without INTAKE_TEST_CLOCK, forward only, and an
answer only once every timer due by then has fired."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from ticket_core.clock import TestClock
from ticket_core.clock_api import clock_from_environment, parse_iso_duration
from ticket_core.replies import ReplyChannels
from ticket_core.store import TicketStore

from .builders import message, route, timed_route
from .test_replies import AUTH, app_for

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
T0 = datetime(2026, 9, 24, 9, 0, tzinfo=UTC)


async def test_without_the_test_clock_both_calls_are_404(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(app_for(store, ReplyChannels()))
    for response in (await client.get("/api/v1/test-clock", headers=AUTH),
                     await client.post("/api/v1/test-clock", headers=AUTH,
                                       json={"advance": "PT1M"})):
        assert response.status == 404
        assert (await response.json())["error"] == "not_found"


async def test_the_clock_moves_forward_only(store: TicketStore,
                                            aiohttp_client: ClientFactory) -> None:
    store.clock = TestClock(T0)
    client = await aiohttp_client(app_for(store, ReplyChannels()))
    now = await (await client.get("/api/v1/test-clock", headers=AUTH)).json()
    assert datetime.fromisoformat(now["now"]) == T0
    moved = await client.post("/api/v1/test-clock", headers=AUTH, json={"advance": "PT30M"})
    assert datetime.fromisoformat((await moved.json())["now"]) == T0 + timedelta(minutes=30)
    to = await client.post("/api/v1/test-clock", headers=AUTH,
                           json={"to": "2026-09-25T08:00:00+08:00"})
    assert to.status == 200
    assert store.clock.now() == datetime(2026, 9, 25, 0, 0, tzinfo=UTC)
    back = await client.post("/api/v1/test-clock", headers=AUTH,
                             json={"to": "2026-09-24T00:00:00Z"})
    assert back.status == 422 and (await back.json())["error"] == "clock_backwards"
    for body in ({}, {"advance": "PT1M", "to": "2026-10-01T00:00:00Z"}, {"advance": "30m"},
                 {"advance": "-PT1M"}, {"advance": "P1M"}, {"advance": "PT"}, {"to": "soon"},
                 {"advance": 30}):
        response = await client.post("/api/v1/test-clock", headers=AUTH, json=body)
        assert response.status == 422, body
    assert store.clock.now() == datetime(2026, 9, 25, 0, 0, tzinfo=UTC)
    assert (await client.get("/api/v1/test-clock")).status == 401


async def test_an_advance_answers_once_the_timers_due_have_fired(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    store.clock = TestClock(T0)
    client = await aiohttp_client(app_for(store, ReplyChannels()))
    stored = await store.persist(message(received_at=T0, routed=timed_route(T0)))
    # The first-response warning (20 min), then its breach (30 min).
    moved = await client.post("/api/v1/test-clock", headers=AUTH, json={"advance": "PT30M"})
    assert (await moved.json())["fired"] == 2
    ticket = await store.get_ticket(stored.ticket_id)  # type: ignore[arg-type]
    assert ticket is not None and ticket.sla is not None
    assert [b.target for b in ticket.sla.breaches] == ["first_response"]
    assert {(t.kind, t.ref): t.state for t in ticket.timers}[
        ("sla_breach", "first_response")] == "fired"
    untimed = await store.persist(message("plain", routed=route()))
    assert untimed.ticket_id is not None


def test_iso_durations() -> None:
    assert parse_iso_duration("PT30M") == timedelta(minutes=30)
    assert parse_iso_duration("P7D") == timedelta(days=7)
    assert parse_iso_duration("P1W2DT3H4M5.5S") == timedelta(days=9, hours=3, minutes=4,
                                                             seconds=5.5)
    for bad in ("", "P", "PT", "P1Y", "P1M", "30m", "PT1H30", "P1DT"):
        with pytest.raises(ValueError):
            parse_iso_duration(bad)


def test_the_environment_turns_the_test_clock_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTAKE_TEST_CLOCK", raising=False)
    assert clock_from_environment() is None
    monkeypatch.setenv("INTAKE_TEST_CLOCK", "1")
    monkeypatch.setenv("INTAKE_TEST_CLOCK_START", "2026-09-24T17:00:00+08:00")
    clock = clock_from_environment()
    assert isinstance(clock, TestClock) and clock.now() == datetime(2026, 9, 24, 9, tzinfo=UTC)
    monkeypatch.delenv("INTAKE_TEST_CLOCK_START")
    started = clock_from_environment()
    assert started is not None
    assert abs((started.now() - datetime.now(UTC)).total_seconds()) < 5
