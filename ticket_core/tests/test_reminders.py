"""Follow-up reminders (回访, issue 17) over HTTP with the test clock, and after a restart:
owned by their agent, they fire once at their minute, on closed tickets too and after a
transfer, with a notification and a `reminder.due` event (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import func, select, update

from ticket_core.agents_db import NOTIFICATIONS
from ticket_core.api import api_routes, auth_middleware
from ticket_core.clock import SystemClock, TestClock
from ticket_core.db import make_engine, migrate
from ticket_core.events import EVENTS
from ticket_core.reminders import write_reminder
from ticket_core.scheduler import Scheduler
from ticket_core.statements import TICKETS
from ticket_core.store import TicketStore

from .builders import message, route
from .test_agents import ADMIN, ADMIN_TOKEN, RULES, Client, bearer, call, make_agent, make_token
from .test_api import ClientFactory

T0 = datetime(2026, 9, 24, 9, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def client(store: TicketStore, aiohttp_client: ClientFactory) -> Client:
    store.timelines = RULES
    store.clock = TestClock(T0)
    app = web.Application(middlewares=[auth_middleware(ADMIN_TOKEN, store)])
    app.add_routes(api_routes(store))
    return await aiohttp_client(app)


async def events(store: TicketStore, event_type: str) -> list[dict[str, Any]]:
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(EVENTS.c.data).where(
            EVENTS.c.type == event_type).order_by(EVENTS.c.id))).all()
    return [row.data for row in rows]


async def advance(client: Client, duration: str) -> None:
    await call(client, "POST", "/api/v1/test-clock", 200, json={"advance": duration})


async def test_a_reminder_fires_once_at_its_minute_on_a_closed_ticket_after_a_transfer(
        client: Client, store: TicketStore) -> None:
    li = await make_agent(client, "LiNa", "aftersales")
    li_token = bearer((await make_token(client, li["id"]))["token"])
    zhao = await make_agent(client, "Zhao", "presales")
    zhao_token = bearer((await make_token(client, zhao["id"]))["token"])
    ticket = (await store.persist(message("r1", routed=route("aftersales")))).ticket_id
    other = (await store.persist(message("r2", routed=route("aftersales"),
                                         email="b@example.cn"))).ticket_id
    path = f"/api/v1/tickets/{ticket}/reminders"
    due = (T0 + timedelta(hours=1)).isoformat()

    for body, headers in (({"due_at": (T0 - timedelta(minutes=1)).isoformat()}, li_token),
                          ({"due_at": T0.isoformat()}, li_token),
                          ({"due_at": due}, ADMIN),  # the admin token is no agent
                          ({"due_at": "tomorrow"}, li_token),
                          ({"due_at": due, "agent_id": "nobody"}, ADMIN)):
        refused = await call(client, "POST", path, 422, headers, json=body)
        assert refused["error"] == "invalid_body" and refused["fields"], body
    assert (await call(client, "POST", path, 403, li_token,
                       json={"due_at": due, "agent_id": zhao["id"]}))["error"] == "forbidden"
    assert (await call(client, "POST", path, 404, zhao_token,
                       json={"due_at": due}))["error"] == "ticket_not_found"
    made = await call(client, "POST", path, 201, li_token,
                      json={"due_at": "2026-09-24T18:00:00+08:00", "note": "回访：确认退款"})
    assert made["state"] == "pending" and made["agent_id"] == li["id"]
    assert made["ticket_id"] == ticket and made["note"] == "回访：确认退款"
    later = await call(client, "POST", f"/api/v1/tickets/{other}/reminders", 201, ADMIN,
                       json={"due_at": (T0 + timedelta(days=1)).isoformat(),
                             "agent_id": li["id"]})
    mine = await call(client, "GET", "/api/v1/agents/me/reminders?state=pending", 200,
                      li_token)
    assert [r["id"] for r in mine["items"]] == [made["id"], later["id"]]
    # Not the ticket's state: not among its timers.
    detail = await call(client, "GET", f"/api/v1/tickets/{ticket}", 200, li_token)
    assert all(t["kind"] != "reminder" for t in detail["timers"])

    # The ticket is resolved, closed, then leaves Li's desks (Li keeps it as first contact).
    for status in ("resolved", "closed"):
        await call(client, "PATCH", f"/api/v1/tickets/{ticket}", 200, json={"status": status})
    await store.write(lambda c: c.execute(update(TICKETS).where(TICKETS.c.id == ticket)
                                          .values(desk="presales", skill_group="sg_presales",
                                                  first_contact_agent_id=li["id"])))

    await advance(client, "PT59M")
    assert (await call(client, "GET", "/api/v1/agents/me/notifications", 200,
                       li_token))["items"] == []
    await advance(client, "PT1M")  # its minute
    notes = (await call(client, "GET", "/api/v1/agents/me/notifications", 200,
                        li_token))["items"]
    assert [(n["kind"], n["ticket_id"], n["payload"]["note"]) for n in notes] == [
        ("reminder", ticket, "回访：确认退款")]
    due_events = await events(store, "reminder.due")
    assert [(e["reminder_id"], e["agent_id"]) for e in due_events] == [(made["id"], li["id"])]
    assert "note" not in due_events[0]  # the event log may leave the building
    listed = await call(client, "GET", "/api/v1/tickets?reminder=due", 200, li_token)
    assert [t["id"] for t in listed["items"]] == [ticket]
    assert (await call(client, "GET", "/api/v1/tickets?reminder=due", 200,
                       zhao_token))["items"] == []
    await call(client, "GET", "/api/v1/tickets?reminder=soon", 400, li_token)
    [due_one] = (await call(client, "GET", "/api/v1/agents/me/reminders?state=due", 200,
                            li_token))["items"]
    assert due_one["id"] == made["id"] and due_one["fired_at"] is not None

    await advance(client, "PT2H")  # fired once, never again
    assert len((await call(client, "GET", "/api/v1/agents/me/notifications", 200,
                           li_token))["items"]) == 1
    reminder = f"/api/v1/reminders/{made['id']}"
    assert (await call(client, "PATCH", reminder, 404, zhao_token,
                       json={"state": "done"}))["error"] == "reminder_not_found"
    await call(client, "PATCH", reminder, 422, li_token, json={"state": "due"})
    assert (await call(client, "PATCH", reminder, 200, li_token,
                       json={"state": "done"}))["state"] == "done"
    await call(client, "PATCH", reminder, 200, li_token, json={"state": "done"})
    assert (await call(client, "PATCH", reminder, 409, li_token,
                       json={"state": "cancelled"}))["error"] == "invalid_transition"
    assert (await call(client, "GET", "/api/v1/tickets?reminder=due", 200,
                       li_token))["items"] == []
    # Cancelled before its minute: it never fires.
    await call(client, "PATCH", f"/api/v1/reminders/{later['id']}", 200, li_token,
               json={"state": "cancelled"})
    await advance(client, "P2D")
    assert len(await events(store, "reminder.due")) == 1
    states = await call(client, "GET", "/api/v1/agents/me/reminders", 200, li_token)
    assert [(r["id"], r["state"]) for r in states["items"]] == [
        (made["id"], "done"), (later["id"], "cancelled")]
    await call(client, "GET", "/api/v1/agents/me/reminders?state=late", 400, li_token)
    await call(client, "GET", "/api/v1/agents/me/reminders", 404, ADMIN)
    await call(client, "PATCH", "/api/v1/reminders/x1", 404, li_token, json={"state": "done"})


async def test_a_reminder_due_while_the_service_was_down_fires_once_at_start(
        store: TicketStore, database_url: str) -> None:
    store.clock = SystemClock()
    ticket = (await store.persist(message("down", routed=route("aftersales")))).ticket_id
    now = store.clock.now()
    reminder_id = await store.write(lambda c: write_reminder(
        c, ticket, "agent-1", now + timedelta(seconds=0.5), "回访", "admin", now))
    await asyncio.sleep(1.0)  # its minute passes with no scheduler running

    restarted = TicketStore(make_engine(database_url), clock=SystemClock())
    try:
        scheduler = Scheduler(restarted, poll_s=0.1)
        assert await scheduler.run_once() == 1
        assert await scheduler.run_once() == 0
        assert await Scheduler(restarted).run_once() == 0  # another process: nothing left
    finally:
        await restarted.close()
        await restarted.engine.dispose()
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(NOTIFICATIONS.c.agent_id, NOTIFICATIONS.c.payload)
                                   .where(NOTIFICATIONS.c.kind == "reminder"))).all()
        count = (await conn.execute(select(func.count()).select_from(EVENTS).where(
            EVENTS.c.type == "reminder.due"))).scalar_one()
    assert [(r.agent_id, r.payload["reminder_id"]) for r in rows] == [
        ("agent-1", str(reminder_id))]
    assert count == 1


# A ticket-core process in miniature (as test_timers_restart.py's): it sets two reminders due
# 1.5 s and 6 s from now, then runs its scheduler until it is killed.
PROCESS = """
import asyncio, sys
from datetime import timedelta
from ticket_core.clock import SystemClock
from ticket_core.db import make_engine, migrate
from ticket_core.reminders import write_reminder
from ticket_core.scheduler import Scheduler
from ticket_core.store import TicketStore
from ticket_core.tests.builders import message, route

async def main(url):
    store = TicketStore(make_engine(url), clock=SystemClock())
    ticket = (await store.persist(message("kill", routed=route("aftersales")))).ticket_id
    now = store.clock.now()
    for agent, due in (("agent-soon", 1.5), ("agent-later", 6.0)):
        await store.write(lambda c, a=agent, d=due: write_reminder(
            c, ticket, a, now + timedelta(seconds=d), None, "admin", now))
    print("planned", flush=True)
    await Scheduler(store, poll_s=0.1).run()

asyncio.run(main(sys.argv[1]))
"""


async def notified(store: TicketStore) -> list[str]:
    async with store.engine.connect() as conn:
        return list((await conn.execute(select(NOTIFICATIONS.c.agent_id).where(
            NOTIFICATIONS.c.kind == "reminder").order_by(NOTIFICATIONS.c.created_at)))
            .scalars())


async def test_a_reminder_due_after_a_kill_9_fires_once_after_the_restart(
        store: TicketStore, database_url: str) -> None:
    await migrate(database_url)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PROCESS, database_url, cwd=REPO, stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line.decode().strip() == "planned"
        for _ in range(400):  # the first fires in the child; then it dies
            if await notified(store):
                break
            await asyncio.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        await asyncio.wait_for(child.wait(), 10)
    assert await notified(store) == ["agent-soon"]

    store.clock = SystemClock()  # the restarted process
    scheduler = Scheduler(store, poll_s=0.1)
    task = asyncio.create_task(scheduler.run())
    try:
        for _ in range(400):
            if len(await notified(store)) >= 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a double firing would show by now
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await notified(store) == ["agent-soon", "agent-later"]
    assert scheduler.fired == 1
