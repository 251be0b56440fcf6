"""SLA clocks on the example config's `cn_office` calendar (Mid-autumn 2026-09-25..27, make-up
Saturday 2026-09-20, lunch 12:00-13:30) with the test clock: due times, pauses, mid-flight
priority and policy changes, next-response cycles, a warning and a breach once each, and a
restart with timers due; on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from intake.config import load_document
from intake.message import Message, Thread
from ticket_core.agents_db import AGENTS, NOTIFICATIONS
from ticket_core.clock import ManualClock
from ticket_core.db import make_engine
from ticket_core.queries import CursorInvalid, TicketFilter
from ticket_core.schemas import TicketDetail, TicketPatch
from ticket_core.statements import TIMERS
from ticket_core.status import write_status
from ticket_core.store import TicketStore
from ticket_core.ticket_patch import patch_ticket
from ticket_core.tickets_config import TicketsConfig
from ticket_core.timers import Timelines

from .builders import message, route
from .test_api import AUTH, build_app
from .test_timers import at, events_of, reply

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "intake.example.yaml"
SHANGHAI = ZoneInfo("Asia/Shanghai")


def cst(day: str, hm: str) -> datetime:
    """A Beijing time as an aware instant."""
    return datetime.fromisoformat(f"{day}T{hm}").replace(tzinfo=SHANGHAI)


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


THURSDAY_17 = cst("2026-09-24", "17:00")  # the day before Mid-autumn (25..27)


@pytest.fixture(scope="module")
def timelines() -> Timelines:
    return Timelines.from_document(load_document(EXAMPLE))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(THURSDAY_17)


@pytest.fixture
def sla_store(store: TicketStore, clock: ManualClock, timelines: Timelines) -> TicketStore:
    store.clock = clock
    store.timelines = timelines
    return store


async def file(store: TicketStore, at_: datetime, *, category: str | None = None,
               priority: str = "normal", desk: str = "aftersales") -> str:
    result = await store.persist(message(received_at=at_, routed=route(
        desk, skill_group="sg_aftersales_l1", priority=priority, category=category)))
    assert result.ticket_id is not None
    return result.ticket_id


async def customer_writes(store: TicketStore, ticket_id: str, at_: datetime) -> None:
    incoming: Message = message(received_at=at_, thread=Thread(ticket_id=ticket_id),
                                text="还有一个问题")
    assert (await store.persist(incoming)).ticket_id == ticket_id


async def ticket(store: TicketStore, ticket_id: str) -> TicketDetail:
    found = await store.get_ticket(ticket_id)
    assert found is not None
    return found


async def pending_sla(store: TicketStore, ticket_id: str) -> list[tuple[str, str, datetime]]:
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(TIMERS).where(
            TIMERS.c.ticket_id == ticket_id, TIMERS.c.state == "pending",
            TIMERS.c.kind.in_(("sla_warning", "sla_breach"))).order_by(TIMERS.c.due_at))).all()
    return [(r.kind, r.ref, r.due_at) for r in rows]


async def set_status(store: TicketStore, ticket_id: str, status: str) -> None:
    await store.write(lambda c: write_status(c, ticket_id, status, store.clock.now(),
                                             store.timelines))


async def patch(store: TicketStore, ticket_id: str, **values: Any) -> None:
    await store.write(lambda c: patch_ticket(
        c, ticket_id, TicketPatch(**values), TicketsConfig(), store.clock.now(),
        timelines=store.timelines))


async def test_filed_thursday_17_before_mid_autumn_first_response_is_due_monday_10(
        sla_store: TicketStore, clock: ManualClock) -> None:
    ticket_id = await file(sla_store, THURSDAY_17)
    sla = (await ticket(sla_store, ticket_id)).sla
    assert sla is not None and (sla.policy, sla.policy_source) == ("standard", "desk")
    # 1 h on Thursday, the holidays, then 1 h on Monday.
    assert sla.first_response_due_at == cst("2026-09-28", "10:00")
    # 15 h: Thursday 1 h, Monday 7.5 h (lunch 12:00-13:30 left out), Tuesday 6.5 h.
    assert sla.resolution_due_at == cst("2026-09-29", "17:00")
    assert sla.next_response_due_at is None and sla.paused is False
    assert await pending_sla(sla_store, ticket_id) == [
        ("sla_warning", "first_response", cst("2026-09-28", "09:36")),  # 80 % of 2 h
        ("sla_breach", "first_response", cst("2026-09-28", "10:00")),
        ("sla_warning", "resolution", cst("2026-09-29", "14:00")),  # 12 h in
        ("sla_breach", "resolution", cst("2026-09-29", "17:00"))]


async def test_a_warning_and_a_breach_fire_once_at_their_minute_and_notify(
        sla_store: TicketStore, clock: ManualClock) -> None:
    supervisor, other = str(uuid.uuid4()), str(uuid.uuid4())
    now = clock.now()
    await sla_store.write(lambda c: c.execute(AGENTS.insert(), [
        {"id": agent_id, "name": name, "email": f"{name}@shop.example", "role": "supervisor",
         "desks": desks, "skill_groups": [], "capacity": {}, "presence": "offline",
         "presence_changed_at": now, "created_at": now, "updated_at": now}
        for agent_id, name, desks in ((supervisor, "boss", ["aftersales"]),
                                      (other, "elsewhere", ["presales"]))]))
    breach = {"service": "ticket-core", "desk": "aftersales", "target": "first_response"}
    before = REGISTRY.get_sample_value("intake_sla_breaches_total", breach) or 0
    ticket_id = await file(sla_store, THURSDAY_17)
    await at(sla_store, clock, cst("2026-09-28", "09:35"))
    assert await events_of(sla_store, "sla.warning") == []
    await at(sla_store, clock, cst("2026-09-28", "09:36"))
    await at(sla_store, clock, cst("2026-09-28", "09:50"))
    warnings = await events_of(sla_store, "sla.warning")
    assert [(w.data["target"], instant(w.data["at"])) for w in warnings] == [
        ("first_response", cst("2026-09-28", "09:36"))]
    assert await events_of(sla_store, "sla.breached") == []
    await at(sla_store, clock, cst("2026-09-28", "10:00"))
    await at(sla_store, clock, cst("2026-09-28", "11:00"))
    breaches = await events_of(sla_store, "sla.breached")
    assert [(b.data["target"], instant(b.data["due_at"])) for b in breaches] == [
        ("first_response", cst("2026-09-28", "10:00"))]
    assert REGISTRY.get_sample_value("intake_sla_breaches_total", breach) == before + 1
    sla = (await ticket(sla_store, ticket_id)).sla
    assert sla is not None
    assert [(b.target, b.at) for b in sla.breaches] == [
        ("first_response", cst("2026-09-28", "10:00"))]
    assert [(w.target, w.fired_at) for w in sla.warnings if w.fired_at] == [
        ("first_response", cst("2026-09-28", "09:36"))]
    async with sla_store.engine.connect() as conn:
        told = (await conn.execute(select(NOTIFICATIONS.c.agent_id, NOTIFICATIONS.c.kind)
                                   .order_by(NOTIFICATIONS.c.created_at))).all()
    assert [(r.agent_id, r.kind) for r in told] == [(supervisor, "sla_warning"),
                                                    (supervisor, "sla_breached")]


async def test_pending_stops_the_clocks_and_open_resumes_them_where_they_stood(
        sla_store: TicketStore, clock: ManualClock) -> None:
    ticket_id = await file(sla_store, THURSDAY_17)
    version = (await ticket(sla_store, ticket_id)).version
    clock.set(cst("2026-09-24", "17:30"))
    await set_status(sla_store, ticket_id, "pending")
    paused = await ticket(sla_store, ticket_id)
    assert paused.version == version + 1  # the clocks' reading is no change of its own
    sla = paused.sla
    assert sla is not None and sla.paused is True
    assert sla.first_response_due_at is None and sla.resolution_due_at is None
    assert await pending_sla(sla_store, ticket_id) == []  # nothing fires while paused
    await at(sla_store, clock, cst("2026-09-28", "09:00"))
    assert await events_of(sla_store, "sla.breached") == []
    await set_status(sla_store, ticket_id, "open")
    sla = (await ticket(sla_store, ticket_id)).sla
    assert sla is not None and sla.paused is False
    # 30 min spent before the pause: 1.5 h left from Monday 09:00.
    assert sla.first_response_due_at == cst("2026-09-28", "10:30")
    assert sla.resolution_due_at == cst("2026-09-29", "17:30")
    assert [(p.start, p.end) for p in sla.pauses] == [
        (cst("2026-09-24", "17:30"), cst("2026-09-28", "09:00"))]


async def test_a_customer_message_on_a_pending_ticket_resumes_its_clocks(
        sla_store: TicketStore, clock: ManualClock) -> None:
    ticket_id = await file(sla_store, THURSDAY_17)
    clock.set(cst("2026-09-24", "17:30"))
    await set_status(sla_store, ticket_id, "pending")
    await customer_writes(sla_store, ticket_id, cst("2026-09-28", "09:00"))
    await at(sla_store, clock, cst("2026-09-28", "09:00"))
    sla = (await ticket(sla_store, ticket_id)).sla
    assert sla is not None and sla.paused is False
    assert sla.first_response_due_at == cst("2026-09-28", "10:30")


async def test_a_priority_change_retargets_without_forgetting_time_spent(
        sla_store: TicketStore, clock: ManualClock) -> None:
    ticket_id = await file(sla_store, THURSDAY_17)
    clock.set(cst("2026-09-24", "17:30"))
    await patch(sla_store, ticket_id, priority="high")  # 1 h: 30 min left
    sla = (await ticket(sla_store, ticket_id)).sla
    assert sla is not None and sla.first_response_due_at == cst("2026-09-24", "18:00")
    clock.set(cst("2026-09-24", "17:40"))
    await patch(sla_store, ticket_id, priority="low")  # 4 h: 20 min Thursday, 3 h Monday
    sla = (await ticket(sla_store, ticket_id)).sla
    assert sla is not None and sla.first_response_due_at == cst("2026-09-28", "12:00")
    assert [p for p in await pending_sla(sla_store, ticket_id) if p[1] == "first_response"] \
        == [("sla_warning", "first_response", cst("2026-09-28", "11:12")),
            ("sla_breach", "first_response", cst("2026-09-28", "12:00"))]
    await at(sla_store, clock, cst("2026-09-24", "18:30"))  # the old due times pass quietly
    assert await events_of(sla_store, "sla.warning") == []


async def test_a_category_change_moves_to_its_policy_keeping_the_pause(
        sla_store: TicketStore, clock: ManualClock) -> None:
    ticket_id = await file(sla_store, THURSDAY_17)
    clock.set(cst("2026-09-24", "17:05"))
    await set_status(sla_store, ticket_id, "pending")
    clock.set(cst("2026-09-24", "17:15"))
    await set_status(sla_store, ticket_id, "open")
    clock.set(cst("2026-09-24", "17:20"))
    await patch(sla_store, ticket_id, category="complaint")
    sla = (await ticket(sla_store, ticket_id)).sla
    assert sla is not None and (sla.policy, sla.policy_source) == ("complaint", "category")
    # `always`, wall clock: 10 min spent (10 paused), 20 left.
    assert sla.first_response_due_at == cst("2026-09-24", "17:40")
    assert sla.resolution_due_at == cst("2026-09-26", "17:10")
    await at(sla_store, clock, cst("2026-09-24", "18:00"))
    assert [(e.data["target"], instant(e.data["at"])) for e in
            await events_of(sla_store, "sla.warning")] == [
        ("first_response", cst("2026-09-24", "17:30"))]  # warn_before 10m
    assert [(e.data["target"], instant(e.data["due_at"]), e.data["policy"]) for e in
            await events_of(sla_store, "sla.breached")] == [
        ("first_response", cst("2026-09-24", "17:40"), "complaint")]


async def test_next_response_runs_from_each_unanswered_customer_message(
        sla_store: TicketStore, clock: ManualClock) -> None:
    monday = "2026-09-28"
    clock.set(cst(monday, "09:00"))
    ticket_id = await file(sla_store, cst(monday, "09:00"))
    clock.set(cst(monday, "09:30"))
    await reply(sla_store, ticket_id)
    await customer_writes(sla_store, ticket_id, cst(monday, "10:00"))
    await at(sla_store, clock, cst(monday, "10:00"))
    sla = (await ticket(sla_store, ticket_id)).sla
    assert sla is not None and sla.first_response_at == cst(monday, "09:30")
    assert (sla.next_response_cycle, sla.next_response_due_at) == (1, cst(monday, "15:30"))
    clock.set(cst(monday, "11:00"))
    await reply(sla_store, ticket_id)
    sla = (await ticket(sla_store, ticket_id)).sla
    assert sla is not None and sla.next_response_due_at is None
    assert [p for p in await pending_sla(sla_store, ticket_id)
            if p[1] == "next_response"] == []
    await customer_writes(sla_store, ticket_id, cst(monday, "11:30"))
    await at(sla_store, clock, cst(monday, "11:30"))
    await customer_writes(sla_store, ticket_id, cst(monday, "11:45"))  # same cycle
    await at(sla_store, clock, cst(monday, "11:45"))
    sla = (await ticket(sla_store, ticket_id)).sla
    assert sla is not None
    assert (sla.next_response_cycle, sla.next_response_due_at) == (2, cst(monday, "17:00"))
    await at(sla_store, clock, cst(monday, "18:00"))
    assert [(e.data["target"], e.data["cycle"], instant(e.data["at"])) for e in
            await events_of(sla_store, "sla.warning")] == [
        ("next_response", 2, cst(monday, "16:12"))]
    assert [(e.data["target"], e.data["cycle"]) for e in
            await events_of(sla_store, "sla.breached")] == [("next_response", 2)]


@contextlib.asynccontextmanager
async def process(url: str, clock: ManualClock,
                  timelines: Timelines) -> AsyncIterator[TicketStore]:
    """A ticket-core process's store: its own engine, on the shared database."""
    engine = make_engine(url)
    store = TicketStore(engine, clock=clock, timelines=timelines)
    try:
        yield store
    finally:
        await store.close()
        await engine.dispose()


async def test_after_a_restart_the_timers_due_meanwhile_fire_once(
        store: TicketStore, database_url: str, clock: ManualClock,
        timelines: Timelines) -> None:
    async with process(database_url, clock, timelines) as before:
        ticket_id = await file(before, THURSDAY_17)
    async with process(database_url, clock, timelines) as after:  # killed and restarted
        await at(after, clock, cst("2026-09-28", "11:00"))
        await at(after, clock, cst("2026-09-28", "11:30"))
        assert [e.data["target"] for e in await events_of(after, "sla.warning")] == [
            "first_response"]
        assert [e.data["target"] for e in await events_of(after, "sla.breached")] == [
            "first_response"]
        sla = (await ticket(after, ticket_id)).sla
        assert sla is not None and len(sla.breaches) == 1


async def page_through(store: TicketStore, filters: TicketFilter) -> list[str]:
    """Every ticket id of a listing, one per page, following the cursors."""
    found: list[str] = []
    cursor = None
    while True:
        page = await store.list_tickets(filters, limit=1, cursor=cursor)
        found.extend(t.id for t in page.items)
        if page.next is None:
            return found
        cursor = page.next


async def test_lists_filter_by_sla_state_and_sort_by_due_priority_and_update(
        sla_store: TicketStore, clock: ManualClock) -> None:
    late = await file(sla_store, THURSDAY_17)  # first response due Monday 10:00
    clock.set(cst("2026-09-28", "09:00"))
    urgent = await file(sla_store, cst("2026-09-28", "09:00"), priority="urgent")  # 09:30
    low = await file(sla_store, cst("2026-09-28", "09:00"), priority="low")  # 13:00
    paused = await file(sla_store, cst("2026-09-28", "09:00"))
    await set_status(sla_store, paused, "pending")  # no clock running: last
    assert await page_through(sla_store, TicketFilter(sort="due")) == [
        urgent, late, low, paused]
    assert await page_through(sla_store, TicketFilter(sort="priority")) == [
        urgent, late, paused, low]
    by_update = (await sla_store.list_tickets(TicketFilter(sort="updated"))).items
    assert [t.updated_at for t in by_update] == sorted(
        (t.updated_at for t in by_update), reverse=True)
    assert len(await page_through(sla_store, TicketFilter(sort="updated"))) == 4
    await at(sla_store, clock, cst("2026-09-28", "09:40"))  # urgent breached, late warned
    assert await page_through(sla_store, TicketFilter(sla="breached")) == [urgent]
    assert await page_through(sla_store, TicketFilter(sla="warning")) == [late]
    with pytest.raises(CursorInvalid):  # a cursor belongs to its order
        page = await sla_store.list_tickets(TicketFilter(sort="due"), limit=1)
        await sla_store.list_tickets(TicketFilter(sort="priority"), cursor=page.next)


async def test_over_http_a_priority_patch_retargets_and_the_list_sorts_by_due(
        sla_store: TicketStore, clock: ManualClock, aiohttp_client: Any) -> None:
    client = await aiohttp_client(build_app(sla_store))
    normal = await file(sla_store, THURSDAY_17)  # due Monday 10:00
    high = await file(sla_store, THURSDAY_17)
    clock.set(cst("2026-09-24", "17:30"))
    response = await client.patch(f"/api/v1/tickets/{high}", json={"priority": "high"},
                                  headers=AUTH)
    assert response.status == 200, await response.text()
    changed = await response.json()
    assert (changed["priority"], instant(changed["sla"]["first_response_due_at"])) == (
        "high", cst("2026-09-24", "18:00"))
    response = await client.get("/api/v1/tickets", params={"sort": "due"}, headers=AUTH)
    assert [t["id"] for t in (await response.json())["items"]] == [high, normal]
    await at(sla_store, clock, cst("2026-09-24", "18:00"))
    response = await client.get("/api/v1/tickets", params={"sla": "breached"}, headers=AUTH)
    assert [t["id"] for t in (await response.json())["items"]] == [high]
