"""Durable timers: overflow, SLA warnings and breaches, the escalation timeline, each fired once
by the scheduler on the injectable clock, across restarts and two processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from intake.config import ConfigDocument, load_document
from intake.message import RouteDelivery
from intake.settings import IntakeSettings
from ticket_core.clock import ManualClock, SystemClock
from ticket_core.db import make_engine
from ticket_core.events import EVENTS
from ticket_core.replies import ReplyChannels, write_reply
from ticket_core.scheduler import Scheduler
from ticket_core.service import follow_timelines
from ticket_core.statements import TIMERS
from ticket_core.store import TicketStore
from ticket_core.timeline import (
    StepNotManual,
    acknowledge_ticket,
    advance_escalation,
)
from ticket_core.timers import Timelines

from .builders import message, timed_route

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "intake.example.yaml"

T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
RULES = ConfigDocument(path=Path("rules.yaml"), data={
    "desks": [{"id": "store_sh", "name": "门店", "default_skill_group": "store_sh_service"},
              {"id": "regional", "name": "区域"},
              {"id": "complaints", "name": "投诉", "default_skill_group": "sg_hotline"},
              {"id": "management", "name": "管理", "default_skill_group": "sg_executives"}],
    "escalations": [{
        "id": "complaint_warning", "name": "预警投诉", "deadline": "24h", "hard_deadline": "48h",
        "steps": [
            {"id": "pickup", "name": "接单", "within": "30m", "done_when": "acknowledged"},
            {"id": "store_handle", "name": "门店服务中心处理", "within": "1h",
             "target": {"desk": "store_sh", "skill_group": "store_sh_service"},
             "on_overdue": ["notify", {"priority": "urgent"}]},
            {"id": "gm", "name": "副总/总经理", "within": "3h",
             "target": {"desk": "management"}}]}]})
STEPS = [("pickup", None, timedelta(minutes=30)),
         ("store_handle", RouteDelivery(desk="store_sh", skill_group="store_sh_service"),
          timedelta(hours=1)),
         ("gm", RouteDelivery(desk="management", skill_group="sg_executives"),
          timedelta(hours=3))]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def timed(store: TicketStore, clock: ManualClock) -> TicketStore:
    store.clock = clock
    store.timelines = Timelines.from_document(RULES)
    return store


async def event_types(store: TicketStore, ticket_id: str) -> list[str]:
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(EVENTS.c.type).where(EVENTS.c.ticket_id == ticket_id)
                                   .order_by(EVENTS.c.id))).all()
    return [r.type for r in rows]


async def events_of(store: TicketStore, event_type: str) -> list[Any]:
    async with store.engine.connect() as conn:
        return list((await conn.execute(select(EVENTS).where(EVENTS.c.type == event_type)
                                        .order_by(EVENTS.c.id))).all())


async def at(store: TicketStore, clock: ManualClock, instant: datetime) -> int:
    """Move the clock and run the scheduler until nothing more is due."""
    clock.set(instant)
    scheduler = Scheduler(store)
    total = 0
    while fired := await scheduler.run_once():
        total += fired
    return total


async def test_a_new_ticket_plans_its_timers_from_the_decision(timed: TicketStore) -> None:
    result = await timed.persist(message(received_at=T0, routed=timed_route(
        T0, overflow_after=timedelta(minutes=10), steps=STEPS)))
    ticket = await timed.get_ticket(result.ticket_id or "")
    assert ticket is not None
    assert [(t.kind, t.ref, t.due_at - T0, t.state) for t in ticket.timers] == [
        ("overflow", "regional", timedelta(minutes=10), "pending"),
        ("sla_warning", "first_response", timedelta(minutes=20), "pending"),
        ("sla_breach", "first_response", timedelta(minutes=30), "pending"),
        ("escalation_step", "complaint_warning.pickup", timedelta(minutes=30), "pending"),
        ("sla_warning", "resolution", timedelta(minutes=110), "pending"),
        ("sla_breach", "resolution", timedelta(hours=2), "pending"),
        ("escalation_deadline", "complaint_warning.deadline", timedelta(hours=24), "pending"),
    ]
    assert ticket.sla is not None and ticket.sla.policy == "complaint_simple"
    assert ticket.sla.first_response_due_at == T0 + timedelta(minutes=30)
    assert ticket.escalation is not None
    assert ticket.escalation.step == "pickup" and ticket.escalation.name == "预警投诉"
    assert [(s.id, s.within, s.done_when) for s in ticket.escalation.steps] == [
        ("pickup", "30m", "acknowledged"), ("store_handle", "1h", "manual"), ("gm", "3h", "manual")]
    assert ticket.escalation.steps[0].started_at == T0
    assert await event_types(timed, ticket.id) == [
        "ticket.created", "escalation.step_started", "message.created"]


async def test_overflow_moves_an_unacknowledged_ticket_once(
        timed: TicketStore, clock: ManualClock) -> None:
    labels = {"service": "ticket-core", "kind": "overflow", "state": "fired"}
    before = REGISTRY.get_sample_value("intake_ticket_core_timers_total", labels) or 0
    result = await timed.persist(message(received_at=T0, routed=timed_route(
        T0, overflow_after=timedelta(minutes=10))))
    assert await at(timed, clock, T0 + timedelta(minutes=9)) == 0
    assert await at(timed, clock, T0 + timedelta(minutes=10)) == 1
    assert REGISTRY.get_sample_value("intake_ticket_core_timers_total", labels) == before + 1
    assert await at(timed, clock, T0 + timedelta(minutes=11)) == 0
    ticket = await timed.get_ticket(result.ticket_id or "")
    assert ticket is not None and (ticket.desk, ticket.skill_group) == ("regional", None)
    overflow = next(t for t in ticket.timers if t.kind == "overflow")
    assert (overflow.state, overflow.fired_at) == ("fired", T0 + timedelta(minutes=10))
    moves = await events_of(timed, "ticket.transferred")
    assert len(moves) == 1 and moves[0].desk == "regional"
    assert moves[0].data["reason"] == "overflow"
    assert moves[0].data["from"] == {"desk": "store_sh", "skill_group": "store_sh_service"}


async def test_acknowledged_in_time_the_ticket_stays_and_its_first_response_clock_runs_on(
        timed: TicketStore, clock: ManualClock) -> None:
    result = await timed.persist(message(received_at=T0, routed=timed_route(
        T0, overflow_after=timedelta(minutes=10), steps=STEPS)))
    ticket_id = result.ticket_id or ""
    clock.set(T0 + timedelta(minutes=5))
    _, changed = await timed.write(lambda c: acknowledge_ticket(
        c, ticket_id, clock.now(), timed.timelines))
    _, again = await timed.write(lambda c: acknowledge_ticket(
        c, str(result.ticket_number), clock.now(), timed.timelines))
    assert (changed, again) == (True, False)
    breach = {"service": "ticket-core", "desk": "store_sh", "target": "first_response"}
    before = REGISTRY.get_sample_value("intake_sla_breaches_total", breach) or 0
    # Until the resolution warning: the first-response warning and breach (an acknowledgement
    # is no reply) and the store's step overdue (at 65 min).
    assert await at(timed, clock, T0 + timedelta(minutes=100)) == 3
    assert REGISTRY.get_sample_value("intake_sla_breaches_total", breach) == before + 1
    ticket = await timed.get_ticket(ticket_id)
    assert ticket is not None and ticket.desk == "store_sh"
    assert ticket.acknowledged_at == T0 + timedelta(minutes=5)
    states = {(t.kind, t.ref): (t.state, t.reason) for t in ticket.timers}
    assert states[("overflow", "regional")] == ("done", "acknowledged")
    assert states[("sla_warning", "first_response")] == ("fired", None)
    assert states[("sla_breach", "first_response")] == ("fired", None)
    assert states[("escalation_step", "complaint_warning.pickup")] == ("done", "completed")
    # The pickup step is done by the acknowledgement: the store's step runs from then.
    assert ticket.escalation is not None and ticket.escalation.step == "store_handle"
    pickup, handle, _ = ticket.escalation.steps
    assert (pickup.completed_at, pickup.by, pickup.overdue) == (
        T0 + timedelta(minutes=5), "agent", False)
    assert (handle.started_at, handle.due_at) == (
        T0 + timedelta(minutes=5), T0 + timedelta(minutes=65))
    assert states[("escalation_step", "complaint_warning.store_handle")] == ("overdue", None)
    assert ticket.priority == "urgent"  # the store step's on_overdue
    assert await at(timed, clock, T0 + timedelta(minutes=110)) == 1
    warned = await events_of(timed, "sla.warning")
    assert [e.data["target"] for e in warned] == ["first_response", "resolution"]
    assert not await events_of(timed, "ticket.transferred")


REPLY_CHANNELS = ReplyChannels(frozenset({"email"}), {"email": "support"})


async def reply(store: TicketStore, ticket_id: str, text: str = "您好，我们已收到") -> str:
    """An agent's reply as `POST …/replies` writes it: with the first-response signal."""
    return await store.write(lambda c: write_reply(
        c, ticket_id, text, [], REPLY_CHANNELS, store.clock.now(),
        timelines=store.timelines, domain_now=store.clock.now()))


async def test_taken_when_first_response_an_acknowledgement_does_not_stop_the_overflow(
        timed: TicketStore, clock: ManualClock) -> None:
    result = await timed.persist(message(received_at=T0, routed=timed_route(
        T0, overflow_after=timedelta(minutes=10), taken_when="first_response")))
    ticket_id = result.ticket_id or ""
    clock.set(T0 + timedelta(minutes=2))
    await timed.write(lambda c: acknowledge_ticket(c, ticket_id, clock.now(), timed.timelines))
    await at(timed, clock, T0 + timedelta(minutes=10))
    ticket = await timed.get_ticket(ticket_id)
    assert ticket is not None and ticket.desk == "regional"
    overflow = next(t for t in ticket.timers if t.kind == "overflow")
    assert (overflow.state, overflow.reason) == ("fired", None)


async def test_taken_when_first_response_the_first_reply_stops_the_overflow_and_meets_the_sla(
        timed: TicketStore, clock: ManualClock) -> None:
    first_response_steps = [("reply", None, timedelta(minutes=45))]
    timed.timelines = Timelines.from_document(ConfigDocument(path=Path("r.yaml"), data={
        **RULES.data, "escalations": [{"id": "complaint_warning", "steps": [
            {"id": "reply", "within": "45m", "done_when": "first_response"}]}]}))
    result = await timed.persist(message(received_at=T0, routed=timed_route(
        T0, overflow_after=timedelta(minutes=10), taken_when="first_response",
        steps=first_response_steps)))
    ticket_id = result.ticket_id or ""
    clock.set(T0 + timedelta(minutes=4))
    await reply(timed, ticket_id)
    clock.set(T0 + timedelta(minutes=6))
    await reply(timed, ticket_id, "补充一下")
    # Nothing of the first response is left to fire: only resolution and the deadline.
    assert await at(timed, clock, T0 + timedelta(hours=1)) == 0
    ticket = await timed.get_ticket(ticket_id)
    assert ticket is not None and ticket.desk == "store_sh" and ticket.acknowledged_at is None
    states = {(t.kind, t.ref): (t.state, t.reason) for t in ticket.timers}
    assert states[("overflow", "regional")] == ("done", "first_response")
    assert states[("sla_warning", "first_response")] == ("done", "first_response")
    assert states[("sla_breach", "first_response")] == ("done", "first_response")
    assert states[("escalation_step", "complaint_warning.reply")] == ("done", "completed")
    assert states[("sla_breach", "resolution")] == ("pending", None)
    assert ticket.sla is not None
    assert ticket.sla.first_response_at == T0 + timedelta(minutes=4)  # the first, kept
    assert ticket.escalation is not None and ticket.escalation.completed_at == (
        T0 + timedelta(minutes=4))
    assert not await events_of(timed, "ticket.transferred")
    assert not await events_of(timed, "sla.warning")


async def test_taken_when_acknowledged_a_reply_meets_the_sla_but_the_overflow_waits(
        timed: TicketStore, clock: ManualClock) -> None:
    result = await timed.persist(message(received_at=T0, routed=timed_route(
        T0, overflow_after=timedelta(minutes=10))))
    ticket_id = result.ticket_id or ""
    clock.set(T0 + timedelta(minutes=1))
    await reply(timed, ticket_id)
    assert await at(timed, clock, T0 + timedelta(minutes=30)) == 1  # the overflow
    ticket = await timed.get_ticket(ticket_id)
    assert ticket is not None and ticket.desk == "regional"
    states = {(t.kind, t.ref): (t.state, t.reason) for t in ticket.timers}
    assert states[("sla_breach", "first_response")] == ("done", "first_response")


async def test_the_warned_complaint_walks_its_timeline_and_records_its_deadlines(
        timed: TicketStore, clock: ManualClock) -> None:
    result = await timed.persist(message(received_at=T0, routed=timed_route(
        T0, steps=STEPS, hard_deadline=timedelta(hours=48))))
    ticket_id = result.ticket_id or ""
    # The first-response warning and breach, the pickup step overdue.
    assert await at(timed, clock, T0 + timedelta(minutes=30)) == 3
    with pytest.raises(StepNotManual):
        await timed.write(lambda c: advance_escalation(
            c, ticket_id, "complaint_warning", "接了", clock.now(), timed.timelines))
    clock.set(T0 + timedelta(minutes=40))
    await timed.write(lambda c: acknowledge_ticket(c, ticket_id, clock.now(),
                                                   timed.timelines))
    ticket = await timed.get_ticket(ticket_id)
    assert ticket is not None and ticket.escalation is not None
    escalation_id = ticket.escalation.id
    clock.set(T0 + timedelta(minutes=50))
    await timed.write(lambda c: advance_escalation(
        c, ticket_id, escalation_id, "门店已回电客户", clock.now(), timed.timelines))
    ticket = await timed.get_ticket(ticket_id)
    assert ticket is not None and ticket.escalation is not None
    assert (ticket.desk, ticket.skill_group) == ("management", "sg_executives")
    assert ticket.escalation.step == "gm"
    handle = ticket.escalation.steps[1]
    assert (handle.note, handle.by, handle.overdue) == ("门店已回电客户", "agent", False)
    # gm overdue, the resolution warning and breach, both deadlines.
    assert await at(timed, clock, T0 + timedelta(hours=48)) == 5
    ticket = await timed.get_ticket(ticket_id)
    assert ticket is not None and ticket.escalation is not None
    assert [b.deadline for b in ticket.escalation.breaches] == ["deadline", "hard_deadline"]
    assert ticket.escalation.steps[2].overdue
    assert [b.target for b in ticket.sla.breaches] == ["first_response", "resolution"]  # type: ignore[union-attr]
    assert [e.data["deadline"] for e in await events_of(timed, "escalation.breached")] == [
        "deadline", "hard_deadline"]
    types = await event_types(timed, ticket_id)
    assert types.count("escalation.step_overdue") == 2
    assert types.count("escalation.step_started") == 3
    assert types.count("escalation.step_completed") == 2


async def test_a_finished_timeline_breaches_no_deadline(
        timed: TicketStore, clock: ManualClock) -> None:
    result = await timed.persist(message(received_at=T0, routed=timed_route(
        T0, steps=STEPS[:2])))
    ticket_id = result.ticket_id or ""
    await timed.write(lambda c: acknowledge_ticket(c, ticket_id, T0, timed.timelines))
    await timed.write(lambda c: advance_escalation(
        c, ticket_id, "complaint_warning", "done", T0, timed.timelines))
    await at(timed, clock, T0 + timedelta(hours=30))
    ticket = await timed.get_ticket(ticket_id)
    assert ticket is not None and ticket.escalation is not None
    assert ticket.escalation.completed_at == T0 and ticket.escalation.step is None
    deadline = next(t for t in ticket.timers if t.kind == "escalation_deadline")
    assert (deadline.state, deadline.reason) == ("done", "completed")
    assert not await events_of(timed, "escalation.breached")


async def test_an_overflow_to_a_desk_gone_from_the_rules_is_cancelled_with_the_reason(
        timed: TicketStore, clock: ManualClock) -> None:
    timed.timelines.desks = frozenset({"store_sh"})
    result = await timed.persist(message(received_at=T0, routed=timed_route(
        T0, overflow_after=timedelta(minutes=10))))
    await at(timed, clock, T0 + timedelta(minutes=10))
    ticket = await timed.get_ticket(result.ticket_id or "")
    assert ticket is not None and ticket.desk == "store_sh"
    overflow = next(t for t in ticket.timers if t.kind == "overflow")
    assert overflow.state == "cancelled"
    assert overflow.reason == "desk regional is not in the rules in force"


@contextlib.asynccontextmanager
async def process(url: str, clock: ManualClock) -> AsyncIterator[TicketStore]:
    """A ticket-core process's store: its own engine, on the shared database."""
    engine = make_engine(url)
    store = TicketStore(engine, clock=clock, timelines=Timelines.from_document(RULES))
    try:
        yield store
    finally:
        await store.close()
        await engine.dispose()


async def test_timers_due_while_no_process_ran_fire_once_after_the_restart_in_due_order(
        store: TicketStore, database_url: str, clock: ManualClock) -> None:
    async with process(database_url, clock) as before:
        first = await before.persist(message(received_at=T0, routed=timed_route(
            T0, overflow_after=timedelta(minutes=10))))
        second = await before.persist(message(received_at=T0 - timedelta(minutes=5),
                                              routed=timed_route(
            T0 - timedelta(minutes=5), overflow_after=timedelta(minutes=10))))
        assert await at(before, clock, T0) == 0
    # The process is gone; time passes; a new one starts on the same database.
    async with process(database_url, clock) as after:
        assert await at(after, clock, T0 + timedelta(hours=3)) == 10
        assert await at(after, clock, T0 + timedelta(hours=4)) == 0
        moves = await events_of(after, "ticket.transferred")
        assert [m.ticket_id for m in moves] == [second.ticket_id, first.ticket_id]
        async with after.engine.connect() as conn:
            fired = (await conn.execute(select(TIMERS.c.fired_at).where(
                TIMERS.c.kind == "overflow"))).scalars().all()
        assert fired == [T0 + timedelta(hours=3)] * 2


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_processes_on_one_postgresql_fire_each_timer_once(
        store: TicketStore, database_url: str, clock: ManualClock) -> None:
    store.clock, store.timelines = clock, Timelines.from_document(RULES)
    count = 120
    await store.persist_many([
        message(received_at=T0, routed=timed_route(T0, overflow_after=timedelta(minutes=10)))
        for _ in range(count)])
    clock.set(T0 + timedelta(minutes=15))
    async with process(database_url, clock) as one, process(database_url, clock) as two:
        schedulers = [Scheduler(one, batch=7), Scheduler(two, batch=7)]

        async def drain(scheduler: Scheduler) -> None:
            # Until nothing is due: a round may fire nothing while the other holds the tickets.
            while (due := await scheduler.next_due()) is not None and due <= clock.now():
                await scheduler.run_once()
                await asyncio.sleep(0)

        await asyncio.gather(*(drain(s) for s in schedulers))
        assert schedulers[0].fired > 0 and schedulers[1].fired > 0
        assert schedulers[0].fired + schedulers[1].fired == count
    moves = await events_of(store, "ticket.transferred")
    assert len(moves) == count and len({m.ticket_id for m in moves}) == count


async def test_the_scheduler_task_fires_a_timer_due_in_a_second_on_the_system_clock(
        store: TicketStore) -> None:
    store.clock = SystemClock()
    now = store.clock.now()
    result = await store.persist(message(received_at=now - timedelta(minutes=10),
                                         routed=timed_route(now - timedelta(minutes=10),
                                                            overflow_after=timedelta(
                                                                minutes=10, seconds=1))))
    task = asyncio.create_task(Scheduler(store, poll_s=0.1).run())
    try:
        for _ in range(200):  # 10 s at most
            if await events_of(store, "ticket.transferred"):
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    moved = await store.get_ticket(result.ticket_id or "")
    assert moved is not None and moved.desk == "regional"
    assert store.clock.now() - now >= timedelta(seconds=1)


def test_rules_without_desks_refuse_no_desk() -> None:
    assert Timelines.from_document(ConfigDocument(path=Path("r.yaml"), data={})).desks is None
    assert Timelines.from_document(RULES).desks == {"store_sh", "regional", "complaints",
                                                    "management"}


async def test_the_service_follows_changes_of_the_timelines(
        store: TicketStore, tmp_path: Path) -> None:
    config = tmp_path / "intake.yaml"
    config.write_text("escalations:\n  - {id: a, steps: [{id: s, within: 5m}]}\n")
    settings = IntakeSettings(config=config, rules=None)
    task = asyncio.create_task(follow_timelines(store, settings, interval_s=0.05))
    try:
        await asyncio.sleep(0.2)
        config.write_text("escalations:\n  - {id: b, steps: [{id: s, within: 5m}]}\n")
        os.utime(config, (1, 1))  # a changed stamp, however coarse the file system's clock
        for _ in range(100):
            if "b" in store.timelines.timelines:
                break
            await asyncio.sleep(0.05)
        assert list(store.timelines.timelines) == ["b"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_step_target_gone_from_the_rules_leaves_the_ticket_where_it_is(
        timed: TicketStore, clock: ManualClock) -> None:
    result = await timed.persist(message(received_at=T0, routed=timed_route(T0, steps=STEPS)))
    ticket_id = result.ticket_id or ""
    timed.timelines.desks = frozenset({"store_sh"})  # management left the rules
    await timed.write(lambda c: acknowledge_ticket(c, ticket_id, T0, timed.timelines))
    await timed.write(lambda c: advance_escalation(c, ticket_id, "complaint_warning", "ok",
                                                   T0, timed.timelines))
    ticket = await timed.get_ticket(ticket_id)
    assert ticket is not None and ticket.escalation is not None
    assert ticket.escalation.step == "gm" and ticket.desk == "store_sh"
    skipped = await events_of(timed, "ticket.transferred")
    assert [e.data["skipped"] for e in skipped] == [
        "desk management is not in the rules in force"]


@pytest.mark.parametrize(("groups", "reason"), [
    ({"store_sh_service": "store_sh"}, "skill group regional_l2 is not in the rules in force"),
    ({"regional_l2": "store_sh"},
     "skill group regional_l2 is not on desk regional in the rules in force"),
])
async def test_an_overflow_to_a_skill_group_gone_from_the_rules_is_cancelled_with_the_reason(
        timed: TicketStore, clock: ManualClock, groups: dict[str, str], reason: str) -> None:
    timed.timelines.desks = frozenset({"store_sh", "regional"})
    timed.timelines.groups = groups
    route = timed_route(T0, overflow_after=timedelta(minutes=10))
    overflow_delivery = route.deliveries[-1].model_copy(update={"skill_group": "regional_l2"})
    route = route.model_copy(update={"deliveries": [*route.deliveries[:-1], overflow_delivery]})
    result = await timed.persist(message(received_at=T0, routed=route))
    await at(timed, clock, T0 + timedelta(minutes=10))
    ticket = await timed.get_ticket(result.ticket_id or "")
    assert ticket is not None and (ticket.desk, ticket.skill_group) == (
        "store_sh", "store_sh_service")
    overflow = next(t for t in ticket.timers if t.kind == "overflow")
    assert (overflow.state, overflow.reason) == ("cancelled", reason)


async def test_the_rules_skill_groups_are_read_with_their_desks() -> None:
    timelines = Timelines.from_document(load_document(EXAMPLE))
    assert timelines.groups is not None
    assert timelines.groups["sg_hotline"] == "complaints"
    assert timelines.gone("complaints", "sg_hotline") is None
    assert timelines.gone("aftersales", "sg_hotline") == (
        "skill group sg_hotline is not on desk aftersales in the rules in force")
