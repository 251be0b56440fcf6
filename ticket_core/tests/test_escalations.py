"""The complaint escalation timeline (预警投诉, issue 17) over HTTP on the example's rules, on
SQLite and PostgreSQL: raising one by hand (supervisors, complaints only, one at a time), the
step group's agents advancing it, each step's group assigning it by its strategy, overdue
steps notifying, the 48-hour breach across a restart, an early resolution skipping steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from intake.config import load_document
from ticket_core.agents_db import NOTIFICATIONS
from ticket_core.api import api_routes, auth_middleware
from ticket_core.clock import ManualClock
from ticket_core.db import make_engine
from ticket_core.statements import TIMERS
from ticket_core.store import TicketStore
from ticket_core.tickets_config import load_tickets
from ticket_core.timers import Timelines

from .builders import message, route
from .test_agents import ADMIN, ADMIN_TOKEN, bearer, call
from .test_api import ClientFactory
from .test_timers import at, event_types, events_of

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "intake.example.yaml"
DOC = load_document(EXAMPLE)
T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
STEPS = ["supervisor_pickup", "handback_to_store", "store_centre", "store_manager",
         "executives", "hotline_handling", "closing"]
Client = TestClient[Any, Any]


def app_for(store: TicketStore) -> web.Application:
    app = web.Application(middlewares=[auth_middleware(ADMIN_TOKEN, store)])
    app.add_routes(api_routes(store))
    return app


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
async def client(store: TicketStore, clock: ManualClock,
                 aiohttp_client: ClientFactory) -> Client:
    store.clock, store.timelines = clock, Timelines.from_document(DOC)
    store.tickets = load_tickets(DOC)
    return await aiohttp_client(app_for(store))


async def agent(client: Client, name: str, groups: list[str], *, role: str = "agent",
                desk: str = "complaints", online: bool = True) -> dict[str, Any]:
    made = await call(client, "POST", "/api/v1/agents", 201, json={
        "name": name, "email": f"{name}@shop.example", "role": role, "desks": [desk],
        "skill_groups": groups})
    token = await call(client, "POST", "/api/v1/tokens", 201, json={"agent_id": made["id"]})
    made["auth"] = bearer(token["token"])
    if online:
        await call(client, "PUT", f"/api/v1/agents/{made['id']}/presence", 200,
                   json={"status": "online"})
    return made  # type: ignore[no-any-return]


async def complaint(store: TicketStore, category: str | None = "complaint") -> str:
    result = await store.persist(message(received_at=T0, routed=route(
        "complaints", skill_group="sg_hotline", category=category, priority="high")))
    assert result.ticket_id is not None
    return result.ticket_id


async def escalate(client: Client, ticket_id: str, expect: int = 201,
                   headers: dict[str, str] | None = None, **body: Any) -> Any:
    return await call(client, "POST", f"/api/v1/tickets/{ticket_id}/escalations", expect,
                      headers, json={"timeline": "warned_complaint", "note": "客户称将找媒体曝光",
                                     **body})


async def advance(client: Client, ticket_id: str, expect: int = 200,
                  headers: dict[str, str] | None = None, note: str = "已处理") -> Any:
    return await call(client, "POST", f"/api/v1/tickets/{ticket_id}/escalations/"
                      "warned_complaint/advance", expect, headers, json={"note": note})


async def notifications(store: TicketStore, agent_id: str) -> list[Any]:
    """The agent's `escalation_overdue` notifications, oldest first."""
    async with store.engine.connect() as conn:
        return list((await conn.execute(select(NOTIFICATIONS).where(
            NOTIFICATIONS.c.agent_id == agent_id, NOTIFICATIONS.c.kind == "escalation_overdue")
            .order_by(NOTIFICATIONS.c.created_at))).all())


async def test_a_supervisor_raises_the_timeline_on_a_complaint_once(
        client: Client, store: TicketStore, clock: ManualClock) -> None:
    hotline = await agent(client, "hotline", ["sg_hotline"])
    boss = await agent(client, "boss", ["sg_hotline_supervisors"], role="supervisor")
    ticket_id = await complaint(store)
    other = await complaint(store, category="inquiry")
    await call(client, "POST", "/api/v1/tickets/" + ticket_id + "/claim", 200, hotline["auth"])

    refused = await escalate(client, ticket_id, 403, hotline["auth"])
    assert refused["error"] == "forbidden" and "supervisor" in refused["fields"]["role"]
    assert (await escalate(client, other, 422, boss["auth"]))["error"] == "not_a_complaint"
    assert (await escalate(client, ticket_id, 422, boss["auth"], timeline="nope"))[
        "error"] == "unknown_timeline"
    assert (await escalate(client, ticket_id, 422, boss["auth"], note="  "))[
        "error"] == "note_required"

    clock.set(T0 + timedelta(minutes=5))
    raised = await escalate(client, ticket_id, 201, boss["auth"])
    escalation = raised["escalation"]
    assert [s["id"] for s in escalation["steps"]] == STEPS
    assert escalation["step"] == "supervisor_pickup"
    assert datetime.fromisoformat(escalation["deadline_at"]) == clock.now() + timedelta(hours=48)
    assert datetime.fromisoformat(escalation["step_due_at"]) == clock.now() + timedelta(
        minutes=30)
    # The first step moved it to the supervisors' queue (claim: it waits, unassigned).
    assert (raised["desk"], raised["skill_group"], raised["assignee_id"]) == (
        "complaints", "sg_hotline_supervisors", None)
    assert [n["text"] for n in raised["notes"]] == ["客户称将找媒体曝光"]
    again = await escalate(client, ticket_id, 409, boss["auth"])
    assert again["error"] == "escalation_active"
    assert again["fields"]["escalation_id"] == escalation["id"]
    types = await event_types(store, ticket_id)
    assert types.count("escalation.raised") == 1 and "escalation.step_started" in types
    async with store.engine.connect() as conn:
        timers = {(r.kind, r.ref): r.due_at for r in await conn.execute(
            select(TIMERS).where(TIMERS.c.ticket_id == ticket_id))}
    assert timers[("escalation_deadline", "warned_complaint.deadline")] == clock.now() + \
        timedelta(hours=48)


async def test_the_step_group_advances_and_each_group_assigns_by_its_strategy(
        client: Client, store: TicketStore) -> None:
    hotline = await agent(client, "hotline", ["sg_hotline"])
    picker = await agent(client, "picker", ["sg_hotline_supervisors"])
    store_agent = await agent(client, "store", ["sg_store_service"])
    boss = await agent(client, "boss", [], role="supervisor")
    ticket_id = await complaint(store)
    await escalate(client, ticket_id, 201, boss["auth"])

    # Only the agents of the current step's group (supervisors and admins too).
    refused = await advance(client, ticket_id, 403, hotline["auth"])
    assert refused["error"] == "not_a_member"
    assert refused["fields"]["skill_group"] == "member of sg_hotline_supervisors"
    assert (await call(client, "POST", f"/api/v1/tickets/{ticket_id}/escalations/"
                       "warned_complaint/advance", 422, picker["auth"], json={"note": " "}))[
        "error"] == "note_required"
    ticket = await advance(client, ticket_id, headers=picker["auth"])
    assert ticket["escalation"]["step"] == "handback_to_store"
    ticket = await advance(client, ticket_id, headers=picker["auth"])
    assert (ticket["escalation"]["step"], ticket["skill_group"]) == (
        "store_centre", "sg_store_service")
    assert (await advance(client, ticket_id, 403, picker["auth"]))["error"] == "not_a_member"
    ticket = await advance(client, ticket_id, headers=store_agent["auth"])
    assert ticket["escalation"]["step"] == "store_manager"
    ticket = await advance(client, ticket_id, headers=boss["auth"])  # a supervisor
    ticket = await advance(client, ticket_id, headers=ADMIN)
    # The hotline (least_loaded) takes it at once, in the same request.
    assert (ticket["escalation"]["step"], ticket["skill_group"], ticket["assignee_id"]) == (
        "hotline_handling", "sg_hotline", hotline["id"])
    ticket = await advance(client, ticket_id, headers=hotline["auth"])
    assert ticket["escalation"]["step"] == "closing"
    # The same group: the assignee stays.
    assert ticket["assignee_id"] == hotline["id"]
    by = [s["by"] for s in ticket["escalation"]["steps"] if s["completed_at"]]
    assert by[0].startswith(f"agent:{picker['id']} ") and by[4] == "admin"
    assert (await advance(client, ticket_id, 409, hotline["auth"]))["error"] == "step_not_manual"

    # `closing` is done when resolved: the escalation completes, nothing skipped.
    resolved = await call(client, "PATCH", f"/api/v1/tickets/{ticket_id}", 200,
                          hotline["auth"], json={"status": "resolved"})
    escalation = resolved["escalation"]
    assert escalation["completed_at"] is not None and escalation["step"] is None
    assert not any(s["skipped"] for s in escalation["steps"])
    [done] = await events_of(store, "escalation.completed")
    assert done.data["skipped"] == []


async def test_resolving_early_completes_it_with_the_steps_left_skipped(
        client: Client, store: TicketStore, clock: ManualClock) -> None:
    boss = await agent(client, "boss", ["sg_hotline_supervisors"], role="supervisor")
    ticket_id = await complaint(store)
    await escalate(client, ticket_id, 201, boss["auth"])
    await advance(client, ticket_id, headers=boss["auth"])
    clock.set(T0 + timedelta(minutes=40))
    resolved = await call(client, "PATCH", f"/api/v1/tickets/{ticket_id}", 200, boss["auth"],
                          json={"status": "resolved"})
    escalation = resolved["escalation"]
    assert datetime.fromisoformat(escalation["completed_at"]) == clock.now()
    assert escalation["step"] is None
    assert [s["id"] for s in escalation["steps"] if s["skipped"]] == STEPS[1:]
    states = {(t["kind"], t["ref"]): (t["state"], t["reason"]) for t in resolved["timers"]}
    assert states[("escalation_step", "warned_complaint.supervisor_pickup")] == (
        "done", "completed")
    assert states[("escalation_step", "warned_complaint.handback_to_store")] == (
        "done", "ticket resolved")
    assert states[("escalation_deadline", "warned_complaint.deadline")] == (
        "done", "ticket resolved")
    [done] = await events_of(store, "escalation.completed")
    assert done.data["skipped"] == STEPS[1:] and done.data["reason"] == "ticket resolved"
    # Past every due time nothing fires: no overdue, no breach.
    await at(store, clock, T0 + timedelta(days=2))  # before the auto close (3d)
    assert await events_of(store, "escalation.step_overdue") == []
    assert await events_of(store, "escalation.breached") == []
    # Reopened: a new escalation may be raised, the old one stays done.
    await call(client, "PATCH", f"/api/v1/tickets/{ticket_id}", 200, boss["auth"],
               json={"status": "open"})
    again = await escalate(client, ticket_id, 201, boss["auth"])
    assert again["escalation"]["id"] != escalation["id"]


async def test_overdue_steps_notify_and_the_48_hours_breach_across_a_restart(
        client: Client, store: TicketStore, clock: ManualClock, database_url: str) -> None:
    boss = await agent(client, "boss", ["sg_hotline_supervisors"], role="supervisor")
    picker = await agent(client, "picker", ["sg_hotline_supervisors"])
    store_boss = await agent(client, "store_boss", [], role="supervisor")  # desk supervisor
    manager = await agent(client, "manager", ["sg_store_managers"], online=False)
    bystander = await agent(client, "hotline", ["sg_hotline"])
    ticket_id = await complaint(store)
    await escalate(client, ticket_id, 201, boss["auth"])

    # supervisor_pickup overdue at 30 min: its group's supervisor hears, and the next step's
    # group (the same supervisors' group: its other members) too.
    assert await at(store, clock, T0 + timedelta(minutes=31)) >= 1
    [told] = await notifications(store, boss["id"])
    assert (told.kind, told.payload["step"], told.payload["as"]) == (
        "escalation_overdue", "supervisor_pickup", "supervisor")
    [heads_up] = await notifications(store, picker["id"])
    assert heads_up.payload["as"] == "next_step"
    await advance(client, ticket_id, headers=picker["auth"])
    await advance(client, ticket_id, headers=picker["auth"])  # on to store_centre (30 min)

    # store_centre overdue: no supervisor in sg_store_service, so the complaints desk's
    # supervisors; the store managers (next step) are told.
    await at(store, clock, T0 + timedelta(minutes=62))
    [desk_told] = await notifications(store, store_boss["id"])
    assert (desk_told.payload["step"], desk_told.payload["as"]) == ("store_centre",
                                                                    "supervisor")
    [coming] = await notifications(store, manager["id"])
    assert (coming.payload["step"], coming.payload["next_step"], coming.payload["as"]) == (
        "store_centre", "store_manager", "next_step")
    assert await notifications(store, bystander["id"]) == []
    overdue = await events_of(store, "escalation.step_overdue")
    assert [e.data["step"] for e in overdue] == ["supervisor_pickup", "store_centre"]

    # A restart: another process on the same database, the clock past the 48 hours.
    engine = make_engine(database_url)
    later = TicketStore(engine, clock=clock, timelines=Timelines.from_document(DOC))
    try:
        await at(later, clock, T0 + timedelta(hours=49))
        ticket = await later.get_ticket(ticket_id)
    finally:
        await later.close()
        await engine.dispose()
    assert ticket is not None and ticket.escalation is not None
    assert [(b.deadline, b.at) for b in ticket.escalation.breaches] == [
        ("deadline", T0 + timedelta(hours=48))]
    [breach] = await events_of(store, "escalation.breached")
    assert breach.data["step"] == "store_centre"
    # Each step fired once: store_centre's overdue is not told twice.
    assert len(await notifications(store, manager["id"])) == 1
