"""Assignment through the real tables (issue 17), on SQLite and PostgreSQL: the assigner's
strategies, presence and capacity, oldest first, claim / next / assignee with their errors and
roles, concurrent claimers, transfer and first-contact notifications, the list filters."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from ticket_core.agents_db import NOTIFICATIONS
from ticket_core.api import api_routes, auth_middleware
from ticket_core.assigner import Assigner
from ticket_core.db import make_engine
from ticket_core.replies import ReplyChannels
from ticket_core.statements import EVENTS, TICKETS
from ticket_core.store import TicketStore
from ticket_core.timers import Timelines

from .builders import message, route
from .test_agents import ADMIN_TOKEN, bearer, call
from .test_api import ClientFactory

Client = TestClient[Any, Any]
RULES = Timelines(
    desks=frozenset({"aftersales", "presales"}),
    groups={"sg_aftersales_l1": "aftersales", "sg_aftersales_claim": "aftersales",
            "sg_presales": "presales"},
    default_group={"aftersales": "sg_aftersales_l1", "presales": "sg_presales"},
    strategies={"sg_aftersales_l1": "least_loaded", "sg_aftersales_claim": "claim",
                "sg_presales": "round_robin"},
    capacities={"sg_aftersales_l1": {"webform": 10}, "sg_aftersales_claim": {"webform": 2}})


@pytest.fixture
async def client(store: TicketStore, aiohttp_client: ClientFactory) -> Client:
    store.timelines = RULES
    app = web.Application(middlewares=[auth_middleware(ADMIN_TOKEN, store)])
    app.add_routes(api_routes(store))
    return await aiohttp_client(app)


async def agent(client: Client, name: str, desk: str, groups: list[str], *,
                role: str = "agent", online: bool = True,
                capacity: dict[str, int] | None = None) -> dict[str, Any]:
    made = await call(client, "POST", "/api/v1/agents", 201, json={
        "name": name, "email": f"{name.lower()}@shop.example", "role": role, "desks": [desk],
        "skill_groups": groups, "capacity": capacity or {}})
    token = await call(client, "POST", "/api/v1/tokens", 201, json={"agent_id": made["id"]})
    made["auth"] = bearer(token["token"])
    if online:
        await call(client, "PUT", f"/api/v1/agents/{made['id']}/presence", 200,
                   json={"status": "online"})
    return made  # type: ignore[no-any-return]


async def ticket(store: TicketStore, group: str = "sg_aftersales_l1", *,
                 desk: str = "aftersales", priority: str = "normal") -> str:
    result = await store.persist(message(routed=route(desk, skill_group=group,
                                                      priority=priority)))
    assert result.ticket_id is not None
    return result.ticket_id


async def assignees(store: TicketStore) -> dict[str, str | None]:
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(TICKETS.c.id, TICKETS.c.assignee_id))).all()
    return {row.id: row.assignee_id for row in rows}


async def drain(store: TicketStore) -> int:
    assigner, total = Assigner(store), 0
    while (count := await assigner.run_once()):
        total += count
    return total


# ---- automatic assignment ------------------------------------------------------------------

async def test_a_posted_form_is_assigned_within_a_second_by_the_running_assigner(
        client: Client, store: TicketStore) -> None:
    li = await agent(client, "Li", "aftersales", ["sg_aftersales_l1"])
    task = asyncio.create_task(Assigner(store, poll_s=0.2).run())
    try:
        ticket_id = await ticket(store)
        deadline = asyncio.get_running_loop().time() + 1.0  # within a second of persisting
        while True:
            shown = await call(client, "GET", f"/api/v1/tickets/{ticket_id}", 200)
            if shown["assignee_id"] or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
    assert shown["assignee_id"] == li["id"] and shown["status"] == "open"
    assert shown["first_contact_agent_id"] == li["id"]
    assert shown["acknowledged_at"] is None  # an automatic assignment does not acknowledge
    async with store.engine.connect() as conn:
        events = (await conn.execute(select(EVENTS).where(
            EVENTS.c.ticket_id == ticket_id, EVENTS.c.type == "ticket.updated"))).all()
    record = next(e.data for e in events if "assignee_id" in e.data.get("changes", {}))
    assert record["changes"]["assignee_id"] == [None, li["id"]]
    assert record["assignment"]["strategy"] == "least_loaded"
    assert record["assignment"]["candidates"] == [li["id"]]


async def test_least_loaded_and_round_robin_share_tickets_evenly(client: Client,
                                                                 store: TicketStore) -> None:
    after = [await agent(client, f"A{i}", "aftersales", ["sg_aftersales_l1"],
                         capacity={"webform": 1000}) for i in range(3)]
    pre = [await agent(client, f"P{i}", "presales", ["sg_presales"]) for i in range(3)]
    for batch in range(6):  # 1,002 tickets, 501 per group
        await store.persist_many([message(routed=route("aftersales",
                                                       skill_group="sg_aftersales_l1"))
                                  for _ in range(83 + (batch < 3))])
        await store.persist_many([message(routed=route("presales", skill_group="sg_presales"))
                                  for _ in range(83 + (batch < 3))])
    assert await drain(store) == 1002
    counts = Counter((await assignees(store)).values())
    assert [counts[a["id"]] for a in after] == [167, 167, 167]
    assert [counts[a["id"]] for a in pre] == [167, 167, 167]


async def test_presence_and_capacity_decide_and_freed_room_goes_to_the_oldest(
        client: Client, store: TicketStore) -> None:
    li = await agent(client, "Li", "aftersales", ["sg_aftersales_l1"], online=False,
                     capacity={"webform": 2})
    away = await agent(client, "Wang", "aftersales", ["sg_aftersales_l1"], online=False)
    await call(client, "PUT", f"/api/v1/agents/{away['id']}/presence", 200,
               json={"status": "away"})
    first = await ticket(store)
    second = await ticket(store)
    urgent = await ticket(store, priority="urgent")
    last = await ticket(store)
    assert await drain(store) == 0  # nobody online: every ticket waits
    await call(client, "PUT", f"/api/v1/agents/{li['id']}/presence", 200,
               json={"status": "online"})
    assert await drain(store) == 2
    held = await assignees(store)
    assert held[urgent] == held[first] == li["id"]  # urgent first, then the longest wait
    assert held[second] is None and held[last] is None
    # Room frees up (a ticket leaves the load statuses): the older one goes, never the newer.
    await call(client, "PATCH", f"/api/v1/tickets/{urgent}", 200, json={"status": "pending"})
    assert await drain(store) == 1
    held = await assignees(store)
    assert held[second] == li["id"] and held[last] is None
    # A capacity raised lets the next one go.
    await call(client, "PATCH", f"/api/v1/agents/{li['id']}", 200,
               json={"capacity": {"webform": 3}})
    assert await drain(store) == 1
    assert (await assignees(store))[last] == li["id"]
    async with store.engine.connect() as conn:
        events = (await conn.execute(select(EVENTS.c.data).where(
            EVENTS.c.ticket_id == last, EVENTS.c.type == "ticket.updated"))).scalars().all()
    record = next(d["assignment"] for d in events if "assignment" in d)
    assert record["passed_over"] == {away["id"]: "away"}


# ---- claim, next, assignee -----------------------------------------------------------------

async def test_claims_and_the_queue_answer_with_their_errors(client: Client,
                                                             store: TicketStore) -> None:
    li = await agent(client, "Li", "aftersales", ["sg_aftersales_claim"])
    wu = await agent(client, "Wu", "aftersales", ["sg_aftersales_claim"])
    outsider = await agent(client, "Qian", "aftersales", ["sg_aftersales_l1"], online=False)
    a = await ticket(store, "sg_aftersales_claim")
    b = await ticket(store, "sg_aftersales_claim", priority="high")
    c = await ticket(store, "sg_aftersales_claim")
    assert await drain(store) == 0  # claim (抢单): nothing automatic
    claimed = await call(client, "POST", f"/api/v1/tickets/{a}/claim", 200, li["auth"])
    assert claimed["assignee_id"] == li["id"] and claimed["status"] == "open"
    assert claimed["acknowledged_at"] is not None  # a claim acknowledges
    assert claimed["first_contact_agent_id"] == li["id"]
    held = await call(client, "POST", f"/api/v1/tickets/{a}/claim", 409, wu["auth"])
    assert held["error"] == "already_assigned" and held["fields"]["assignee_id"] == li["id"]
    await call(client, "POST", f"/api/v1/tickets/{a}/claim", 200, li["auth"])  # again: same
    refused = await call(client, "POST", f"/api/v1/tickets/{b}/claim", 403, outsider["auth"])
    assert refused["error"] == "not_a_member"
    await call(client, "POST", f"/api/v1/tickets/{b}/claim", 403)  # the admin is no agent
    # The queue's best: high priority before the older normal one.
    taken = await call(client, "POST", "/api/v1/queues/sg_aftersales_claim/next", 200,
                       li["auth"])
    assert taken["id"] == b
    full = await call(client, "POST", f"/api/v1/tickets/{c}/claim", 409, li["auth"])
    assert full["error"] == "at_capacity"  # the group's webform capacity is 2
    full = await call(client, "POST", "/api/v1/queues/sg_aftersales_claim/next", 409,
                      li["auth"])
    assert full["error"] == "at_capacity"
    assert (await call(client, "POST", "/api/v1/queues/sg_aftersales_claim/next", 200,
                       wu["auth"]))["id"] == c
    response = await client.post("/api/v1/queues/sg_aftersales_claim/next",
                                 headers=wu["auth"])
    assert response.status == 204
    await call(client, "POST", "/api/v1/queues/sg_aftersales_l1/next", 403, wu["auth"])
    await call(client, "POST", "/api/v1/queues/sg_nowhere/next", 404, wu["auth"])


async def test_supervisors_assign_anyone_beyond_capacity_agents_only_themselves(
        client: Client, store: TicketStore) -> None:
    li = await agent(client, "Li", "aftersales", ["sg_aftersales_claim"])
    wu = await agent(client, "Wu", "aftersales", ["sg_aftersales_claim"], online=False)
    boss = await agent(client, "Boss", "aftersales", [], role="supervisor")
    tickets = [await ticket(store, "sg_aftersales_claim") for _ in range(3)]
    refused = await call(client, "PUT", f"/api/v1/tickets/{tickets[0]}/assignee", 403,
                         li["auth"], json={"agent_id": wu["id"]})
    assert refused["error"] == "forbidden"
    mine = await call(client, "PUT", f"/api/v1/tickets/{tickets[0]}/assignee", 200,
                      li["auth"], json={"agent_id": li["id"]})
    assert mine["assignee_id"] == li["id"]
    for t in tickets:  # Wu is offline and the group's capacity is 2: a supervisor may
        shown = await call(client, "PUT", f"/api/v1/tickets/{t}/assignee", 200, boss["auth"],
                           json={"agent_id": wu["id"]})
        assert shown["assignee_id"] == wu["id"] and shown["acknowledged_at"] is not None
    # Li was the first contact of the first ticket and keeps it; told of the reassignment.
    assert shown["first_contact_agent_id"] == wu["id"]
    first = await call(client, "GET", f"/api/v1/tickets/{tickets[0]}", 200)
    assert first["first_contact_agent_id"] == li["id"]
    notes = await call(client, "GET", "/api/v1/agents/me/notifications", 200, li["auth"])
    assert [n["kind"] for n in notes["items"]] == ["reassigned"]
    back = await call(client, "PUT", f"/api/v1/tickets/{tickets[1]}/assignee", 200,
                      boss["auth"], json={"agent_id": None})
    assert back["assignee_id"] is None
    await call(client, "PUT", f"/api/v1/tickets/{tickets[1]}/assignee", 422, boss["auth"],
               json={"agent_id": "nobody"})
    # The list filters.
    page = await call(client, "GET", "/api/v1/tickets?assignee=me", 200, wu["auth"])
    assert {t["id"] for t in page["items"]} == {tickets[0], tickets[2]}
    page = await call(client, "GET", "/api/v1/tickets?assignee=none", 200)
    assert [t["id"] for t in page["items"]] == [tickets[1]]
    page = await call(client, "GET", f"/api/v1/tickets?assignee={li['id']}", 200)
    assert page["items"] == []
    page = await call(client, "GET", "/api/v1/tickets?first_contact=me", 200, li["auth"])
    assert [t["id"] for t in page["items"]] == [tickets[0]]
    await call(client, "GET", "/api/v1/tickets?assignee=me", 400)  # the admin is no agent
    await call(client, "GET", "/api/v1/tickets?first_contact=someone", 400, li["auth"])


# ---- concurrency ---------------------------------------------------------------------------

async def test_fifty_concurrent_claimers_take_two_hundred_tickets_each_once(
        client: Client, store: TicketStore, database_url: str) -> None:
    from ticket_core.assigning import next_ticket

    claimers = [(await call(client, "POST", "/api/v1/agents", 201, json={
        "name": f"C{i}", "email": f"c{i}@shop.example", "role": "agent",
        "desks": ["aftersales"], "skill_groups": ["sg_aftersales_claim"],
        "capacity": {"webform": 1000}}))["id"] for i in range(50)]
    for _ in range(4):
        await store.persist_many([message(routed=route(
            "aftersales", skill_group="sg_aftersales_claim")) for _ in range(50)])
    # Several stores (SQLite: writer threads on one file; PostgreSQL: pools) racing.
    stores = [TicketStore(make_engine(database_url)) for _ in range(5)]
    taken: list[tuple[str, str]] = []

    async def claimer(index: int) -> None:
        mine, agent_id = stores[index % len(stores)], claimers[index]
        while True:
            got = await mine.write(lambda c, now=mine.clock.now(): next_ticket(
                c, "sg_aftersales_claim", agent_id, now, RULES, ["new", "open"],
                f"agent:{agent_id}"))
            if got is None:
                return
            taken.append((got, agent_id))

    try:
        await asyncio.gather(*(claimer(i) for i in range(50)))
    finally:
        for other in stores:
            await other.close()
            await other.engine.dispose()
    ids = [t for t, _ in taken]
    assert len(ids) == 200 and len(set(ids)) == 200  # none given twice, none lost
    held = await assignees(store)
    assert all(held[t] == a for t, a in taken)
    assert len({a for _, a in taken}) > 1


# ---- transfer and first contact ------------------------------------------------------------

async def test_a_transfer_needs_a_note_moves_the_ticket_and_tells_the_first_contact(
        client: Client, store: TicketStore) -> None:
    li = await agent(client, "Li", "aftersales", ["sg_aftersales_claim"])
    zhao = await agent(client, "Zhao", "presales", ["sg_presales"])
    t = await ticket(store, "sg_aftersales_claim")
    await call(client, "POST", f"/api/v1/tickets/{t}/claim", 200, li["auth"])
    for note in (None, "", "   "):
        body: dict[str, Any] = {"to": {"desk": "presales"}}
        if note is not None:
            body["note"] = note
        refused = await call(client, "POST", f"/api/v1/tickets/{t}/transfer", 422,
                             li["auth"], json=body)
        assert refused["error"] == "note_required"
    await call(client, "POST", f"/api/v1/tickets/{t}/transfer", 422, li["auth"],
               json={"to": {"desk": "nowhere"}, "note": "x"})
    await call(client, "POST", f"/api/v1/tickets/{t}/transfer", 422, li["auth"],
               json={"to": {"desk": "presales", "skill_group": "sg_presales"}, "note": "x"})
    moved = await call(client, "POST", f"/api/v1/tickets/{t}/transfer", 200, li["auth"],
                       json={"to": {"desk": "presales"}, "note": "客户咨询新品价格"})
    # Out of Li's desks now, assigned by the presales group's round robin at once.
    assert moved["desk"] == "presales" and moved["skill_group"] == "sg_presales"
    assert moved["assignee_id"] == zhao["id"]
    assert moved["first_contact_agent_id"] == li["id"]
    assert [n["text"] for n in moved["notes"]] == ["客户咨询新品价格"]
    # Li, first contact, still reads it and may add notes, but not write otherwise.
    await call(client, "GET", f"/api/v1/tickets/{t}", 200, li["auth"])
    await call(client, "POST", f"/api/v1/tickets/{t}/notes", 201, li["auth"],
               json={"text": "客户是老会员"})
    await call(client, "POST", f"/api/v1/tickets/{t}/claim", 403, li["auth"])
    zhao_kinds = [n["kind"] for n in (await call(
        client, "GET", "/api/v1/agents/me/notifications", 200, zhao["auth"]))["items"]]
    assert zhao_kinds == ["assigned"]
    # Zhao transfers it back to a group; Li is told.
    await call(client, "POST", f"/api/v1/tickets/{t}/transfer", 200, zhao["auth"],
               json={"to": {"skill_group": "sg_aftersales_claim"}, "note": "售后问题"})
    kinds = [n["kind"] for n in (await call(client, "GET", "/api/v1/agents/me/notifications",
                                            200, li["auth"]))["items"]]
    assert kinds == ["transferred", "reassigned"]  # newest first: Zhao's, then the round
    back = await call(client, "GET", f"/api/v1/tickets/{t}", 200, li["auth"])
    assert back["assignee_id"] is None and back["first_contact_agent_id"] == li["id"]
    async with store.engine.connect() as conn:
        transfers = (await conn.execute(select(EVENTS.c.data).where(
            EVENTS.c.ticket_id == t, EVENTS.c.type == "ticket.transferred"))).scalars().all()
        rows = (await conn.execute(select(NOTIFICATIONS))).all()
    assert len(transfers) == 2 and all(d["note_id"] for d in transfers)
    assert all(n.ticket_id == t for n in rows)


async def test_the_first_public_reply_makes_its_agent_first_contact_and_acknowledges(
        client: Client, store: TicketStore, aiohttp_client: ClientFactory) -> None:
    li = await agent(client, "Li", "aftersales", ["sg_aftersales_claim"])
    t = await ticket(store, "sg_aftersales_claim")
    app = web.Application(middlewares=[auth_middleware(ADMIN_TOKEN, store)])
    app.add_routes(api_routes(store, reply_channels=ReplyChannels.parse(
        "webform,email", {"email": "support@example.com"})))
    replying = await aiohttp_client(app)
    await call(replying, "POST", f"/api/v1/tickets/{t}/replies", 201, li["auth"],
               json={"text": "您好，我们正在处理"})
    shown = await call(client, "GET", f"/api/v1/tickets/{t}", 200)
    assert shown["first_contact_agent_id"] == li["id"]
    assert shown["acknowledged_at"] is not None and shown["assignee_id"] is None


async def test_the_first_contact_hears_of_status_changes_by_others(client: Client,
                                                                  store: TicketStore) -> None:
    li = await agent(client, "Li", "aftersales", ["sg_aftersales_claim"])
    wu = await agent(client, "Wu", "aftersales", ["sg_aftersales_claim"])
    t = await ticket(store, "sg_aftersales_claim")
    await call(client, "POST", f"/api/v1/tickets/{t}/claim", 200, li["auth"])
    await call(client, "PATCH", f"/api/v1/tickets/{t}", 200, li["auth"],
               json={"status": "pending"})  # her own change: nothing to tell her
    await call(client, "PATCH", f"/api/v1/tickets/{t}", 200, wu["auth"],
               json={"status": "open"})
    items = (await call(client, "GET", "/api/v1/agents/me/notifications", 200,
                        li["auth"]))["items"]
    assert [(n["kind"], n["payload"]["status"]) for n in items] == [("status_changed", "open")]


async def test_the_first_contact_hears_of_each_customer_message_once(
        client: Client, store: TicketStore) -> None:
    from intake.message import Thread

    li = await agent(client, "Li", "aftersales", ["sg_aftersales_claim"])
    assigner = Assigner(store)
    await assigner.tell_first_contacts()  # the first round starts at the end of the log
    first = await store.persist(message("fc-1", routed=route(
        "aftersales", skill_group="sg_aftersales_claim")))
    await assigner.tell_first_contacts()  # no first contact yet: nobody to tell
    await call(client, "POST", f"/api/v1/tickets/{first.ticket_id}/claim", 200, li["auth"])
    await store.persist(message("fc-2", routed=route(
        "aftersales", skill_group="sg_aftersales_claim"), text="还没到",
        thread=Thread(ticket_id=first.ticket_id)))
    await assigner.tell_first_contacts()
    await assigner.tell_first_contacts()  # told once
    items = (await call(client, "GET", "/api/v1/agents/me/notifications", 200,
                        li["auth"]))["items"]
    assert [(n["kind"], n["ticket_id"]) for n in items] == [
        ("customer_message", first.ticket_id)]
