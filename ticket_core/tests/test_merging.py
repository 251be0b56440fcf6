"""Merging tickets and customers (issue 17) over HTTP and on the real persist path, on SQLite
and PostgreSQL: what moves, what the sources become, the refusals, later messages landing on
the target, and "A into B" racing "B into A" (exactly one wins)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select, update

import ticket_core.store as store_module
from intake.message import Attachment, Identity, Thread
from ticket_core.agents_db import NOTIFICATIONS
from ticket_core.api import api_routes, auth_middleware
from ticket_core.clock import TestClock
from ticket_core.db import make_engine
from ticket_core.events import EVENTS
from ticket_core.merging import MergeRefused, merge_customers, merge_tickets
from ticket_core.scope import SYSTEM
from ticket_core.statements import CUSTOMERS, TICKETS
from ticket_core.store import TicketStore

from .builders import message, route
from .test_agents import ADMIN_TOKEN, RULES, Client, bearer, call, make_agent, make_token
from .test_api import ClientFactory

T0 = datetime(2026, 9, 24, 9, 0, tzinfo=UTC)


@pytest.fixture
async def client(store: TicketStore, aiohttp_client: ClientFactory) -> Client:
    store.timelines = RULES
    store.clock = TestClock(T0)
    app = web.Application(middlewares=[auth_middleware(ADMIN_TOKEN, store)])
    app.add_routes(api_routes(store))
    return await aiohttp_client(app)


async def events(store: TicketStore, event_type: str) -> list[Any]:
    async with store.engine.connect() as conn:
        return list((await conn.execute(select(EVENTS).where(
            EVENTS.c.type == event_type).order_by(EVENTS.c.id))).all())


async def agent_token(client: Client, name: str, desk: str, role: str = "agent",
                      ) -> tuple[dict[str, Any], dict[str, str]]:
    agent = await make_agent(client, name, desk, role=role)
    return agent, bearer((await make_token(client, agent["id"]))["token"])


# ---- tickets --------------------------------------------------------------------------------

async def test_a_merge_moves_messages_notes_tags_and_reminders_and_the_source_stays_readable(
        client: Client, store: TicketStore) -> None:
    li, li_token = await agent_token(client, "LiNa", "aftersales")
    attachment = Attachment(filename="invoice.pdf", content_type="application/pdf", size=10,
                            sha256="c" * 64, blob="sha256:" + "c" * 64)
    target = await store.persist(message("t-1", routed=route("aftersales"),
                                         subject="退款", text="我要退款，订单已签收"))
    source = await store.persist(message(
        "s-1", routed=route("aftersales"), subject="物流", text="快递员没有送货上门",
        attachments=[attachment], thread=Thread(message_id="<s-1@example.cn>")))
    src, dst = source.ticket_id, target.ticket_id
    src_path, dst_path = f"/api/v1/tickets/{src}", f"/api/v1/tickets/{dst}"
    await call(client, "PATCH", dst_path, 200, li_token, json={"tags": ["vip"]})
    await call(client, "PATCH", src_path, 200, li_token,
               json={"add_tags": ["logistics", "vip"], "status": "pending"})
    await call(client, "POST", f"{src_path}/notes", 201, li_token, json={"text": "客户很着急"})
    reminder = await call(client, "POST", f"{src_path}/reminders", 201, li_token,
                          json={"due_at": (T0 + timedelta(days=1)).isoformat()})
    before = await call(client, "GET", src_path, 200, li_token)
    assert [t["kind"] for t in before["timers"] if t["state"] == "pending"] == [
        "auto_resolve"]

    merged = await call(client, "POST", f"{dst_path}/merge", 200, li_token,
                        json={"source_ids": [str(source.ticket_number)], "note": "同一问题"})
    assert merged["id"] == dst and merged["tags"] == ["vip", "logistics"]
    by_text = {m["text"]: m for m in merged["messages"]}
    assert set(by_text) == {"我要退款，订单已签收", "快递员没有送货上门"}
    assert by_text["快递员没有送货上门"]["original_ticket_number"] == source.ticket_number
    assert by_text["我要退款，订单已签收"]["original_ticket_number"] is None
    assert [a["filename"] for a in by_text["快递员没有送货上门"]["attachments"]] == [
        "invoice.pdf"]
    # The test clock stands still: both notes were written at T0.
    assert sorted(n["text"] for n in merged["notes"]) == sorted(["客户很着急", "同一问题"])

    dead = await call(client, "GET", src_path, 200, li_token)  # still readable
    assert dead["status"] == "merged" and dead["merged_into"] == dst
    assert dead["messages"] == [] and dead["notes"] == []
    assert {t["kind"]: (t["state"], t["reason"]) for t in dead["timers"]} == {
        "auto_resolve": ("cancelled", f"ticket merged into {target.ticket_number}")}
    [moved] = (await call(client, "GET", "/api/v1/agents/me/reminders?state=pending", 200,
                          li_token))["items"]
    assert moved["id"] == reminder["id"] and moved["ticket_id"] == dst
    assert moved["agent_id"] == li["id"]

    # The search documents were rebuilt: the source's words find the target only.
    found = await call(client, "GET", "/api/v1/search?q=送货上门", 200, li_token)
    assert [item["id"] for item in found["items"]] == [dst]
    assert [i["id"] for i in (await call(client, "GET", "/api/v1/search?q=客户很着急", 200,
                                         li_token))["items"]] == [dst]

    [as_source, as_target] = await events(store, "ticket.merged")
    assert (as_source.ticket_id, as_source.data["role"]) == (src, "source")
    assert as_source.data["before"] == {"status": "pending", "merged_into": None}
    assert as_source.data["after"] == {"status": "merged", "merged_into": dst}
    assert as_source.actor.startswith(f"agent:{li['id']} token:")
    assert (as_target.ticket_id, as_target.data["role"]) == (dst, "target")
    assert as_target.data["moved"] == {"messages": 1, "notes": 1, "reminders": 1}
    assert as_target.data["before"]["tags"] == ["vip"]
    assert as_target.data["after"]["tags"] == ["vip", "logistics"]

    # Later messages threaded to the source land on the target (the real persist path), by
    # its number, its id, and a reply to a moved message's Message-ID.
    for key, thread in (("l-1", Thread(ticket_number=f"#{source.ticket_number}")),
                        ("l-2", Thread(ticket_id=src)),
                        ("l-3", Thread(in_reply_to="<s-1@example.cn>"))):
        later = await store.persist(message(key, routed=route("aftersales"), thread=thread))
        assert later.ticket_id == dst, key


async def test_merge_refusals_name_their_reason(client: Client, store: TicketStore) -> None:
    _, li_token = await agent_token(client, "LiNa", "aftersales")
    _, zhao_token = await agent_token(client, "Zhao", "presales")
    a, b, c, d = [(await store.persist(message(f"m-{i}", routed=route("aftersales"))))
                  for i in range(4)]
    other = await store.persist(message("o-1", routed=route("aftersales"),
                                        email="someone.else@example.cn"))
    presales = await store.persist(message("p-1", routed=route("presales"),
                                           email="presales@example.cn"))

    def merge(target: Any) -> str:
        return f"/api/v1/tickets/{target.ticket_id}/merge"

    def ids(*sources: Any) -> dict[str, Any]:
        return {"source_ids": [s.ticket_id for s in sources]}

    bodies: list[dict[str, Any]] = [
        {}, {"source_ids": []}, {"source_ids": "x"}, {"source_ids": ["x"] * 51},
        {"source_ids": [a.ticket_id], "unknown": 1}, {"source_ids": ["１００２"]}]
    for body in bodies:
        assert (await call(client, "POST", merge(a), 422, li_token,
                           json=body))["error"] == "invalid_body", body
    assert (await call(client, "POST", merge(a), 422, li_token, json={
        "source_ids": [str(a.ticket_number)]}))["error"] == "merge_into_self"
    assert (await call(client, "POST", merge(a), 404, li_token,
                       json={"source_ids": ["nope"]}))["error"] == "ticket_not_found"
    # Another desk's ticket, as source or as target: 404, never 403.
    assert (await call(client, "POST", merge(a), 404, li_token,
                       json=ids(presales)))["error"] == "ticket_not_found"
    assert (await call(client, "POST", merge(a), 404, zhao_token,
                       json=ids(b)))["error"] == "ticket_not_found"
    # A presales ticket Li follows as its first contact: readable, not hers to merge.
    li_id = (await call(client, "GET", "/api/v1/agents/me", 200, li_token))["id"]
    internal = await store.persist(message("i-1", routed=route("aftersales")))
    await store.write(lambda conn: (
        conn.execute(update(TICKETS).where(TICKETS.c.id == presales.ticket_id).values(
            first_contact_agent_id=li_id)),
        conn.execute(update(TICKETS).where(TICKETS.c.id == internal.ticket_id).values(
            customer_facing=False, primary_ticket_id=d.ticket_id, role="copy",
            link_relation="multi"))))
    assert (await call(client, "POST", merge(a), 403, li_token,
                       json=ids(presales)))["error"] == "read_only_access"
    for target, source in ((a, internal), (internal, a)):
        assert (await call(client, "POST", merge(target), 409, li_token,
                           json=ids(source)))["error"] == "not_customer_facing"
    differ = await call(client, "POST", merge(a), 409, li_token, json=ids(other))
    assert differ["error"] == "customers_differ"
    assert differ["fields"]["source_ids"] == str(other.ticket_number)

    await call(client, "POST", merge(a), 200, li_token, json=ids(b))
    assert (await call(client, "POST", merge(c), 409, li_token,
                       json=ids(b)))["error"] == "ticket_merged"  # a merged source
    assert (await call(client, "POST", merge(b), 409, li_token,
                       json=ids(c)))["error"] == "ticket_merged"  # a merged target
    for status in ("resolved", "closed"):
        await call(client, "PATCH", f"/api/v1/tickets/{d.ticket_id}", 200,
                   json={"status": status})
    assert (await call(client, "POST", merge(d), 409, li_token,
                       json=ids(c)))["error"] == "ticket_closed"
    # Nothing was written by the refusals: c is as it was.
    assert (await call(client, "GET", f"/api/v1/tickets/{c.ticket_id}", 200))["status"] == "new"
    # Confirmed, another customer's ticket merges; its messages keep their customer.
    merged = await call(client, "POST", merge(a), 200, li_token, json={
        **ids(other, c), "confirm_different_customers": True})
    assert merged["customer_id"] == a.customer_id
    assert {m["customer_id"] for m in merged["messages"]} == {a.customer_id, other.customer_id}
    assert len(await events(store, "ticket.merged")) == 2 + 3


async def test_whoever_worked_a_source_is_told_where_it_went(
        client: Client, store: TicketStore) -> None:
    li, li_token = await agent_token(client, "LiNa", "aftersales")
    wang, _ = await agent_token(client, "Wang", "aftersales")
    a = await store.persist(message("n-1", routed=route("aftersales")))
    b = await store.persist(message("n-2", routed=route("aftersales")))
    await call(client, "PUT", f"/api/v1/tickets/{b.ticket_id}/assignee", 200,
               json={"agent_id": wang["id"]})
    await call(client, "POST", f"/api/v1/tickets/{a.ticket_id}/merge", 200, li_token,
               json={"source_ids": [b.ticket_id]})
    async with store.engine.connect() as conn:
        told = (await conn.execute(select(NOTIFICATIONS.c.agent_id, NOTIFICATIONS.c.payload)
                                   .where(NOTIFICATIONS.c.kind == "merged"))).all()
    assert [(row.agent_id, row.payload["sources"]) for row in told] == [
        (wang["id"], [b.ticket_number])]
    assert li["id"] not in {row.agent_id for row in told}


async def test_a_into_b_and_b_into_a_at_once_exactly_one_wins(
        client: Client, store: TicketStore, database_url: str) -> None:
    pairs: list[tuple[str, str]] = []
    for i in range(8):
        first = await store.persist(message(f"x-{i}", routed=route("aftersales")))
        second = await store.persist(message(f"y-{i}", routed=route("aftersales")))
        assert first.ticket_id is not None and second.ticket_id is not None
        pairs.append((first.ticket_id, second.ticket_id))
    # Two stores racing (SQLite: two writer threads on one file; PostgreSQL: two pools).
    stores = [TicketStore(make_engine(database_url)) for _ in range(2)]

    async def merge(index: int, target: str, source: str) -> str:
        try:
            await stores[index].write(lambda c: merge_tickets(
                c, target, [source], None, False, T0, SYSTEM))
        except MergeRefused as exc:
            return exc.code
        return "merged"

    try:
        # Each pair both ways at once, each direction through its own store.
        outcomes = await asyncio.gather(*(merge(way, *ends) for pair in pairs
                                          for way, ends in enumerate((pair, pair[::-1]))))
    finally:
        for racing in stores:
            await racing.close()
            await racing.engine.dispose()
    for index, (a, b) in enumerate(pairs):
        assert sorted(outcomes[2 * index:2 * index + 2]) == ["merged", "ticket_merged"]
        async with store.engine.connect() as conn:
            rows = {r.id: r for r in await conn.execute(
                select(TICKETS).where(TICKETS.c.id.in_([a, b])))}
        statuses = sorted((rows[a].status, rows[b].status))
        assert statuses == ["merged", "new"]  # never both merged, never pointing at each other
        loser = a if rows[a].status == "merged" else b
        assert rows[loser].merged_into == (b if loser == a else a)


async def test_a_message_planned_before_a_merge_committed_lands_on_the_target(
        client: Client, store: TicketStore, database_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: a batch planned against a source that a merge then commits (another
    connection) plans again, so its message joins the target and the source stays merged
    (before: it was appended to the source, whose status the batch set back to `open`)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite writes one transaction at a time: the plan cannot go stale")
    target = await store.persist(message("r-1", routed=route("aftersales")))
    source = await store.persist(message("r-2", routed=route("aftersales")))
    assert target.ticket_id is not None and source.ticket_id is not None
    real_plan = store_module.plan_batch
    merges: list[str] = []

    async def merge_elsewhere() -> None:
        other = TicketStore(make_engine(database_url))
        try:
            merges.append(await other.write(lambda c: merge_tickets(
                c, str(target.ticket_id), [str(source.ticket_id)], None, False, T0, SYSTEM)))
        finally:
            await other.close()
            await other.engine.dispose()

    def plan_then_merge(*args: Any, **kwargs: Any) -> Any:
        plan = real_plan(*args, **kwargs)
        if not merges:  # the first plan read the source open; the merge commits now
            thread = threading.Thread(target=lambda: asyncio.run(merge_elsewhere()))
            thread.start()
            thread.join()
        return plan

    monkeypatch.setattr(store_module, "plan_batch", plan_then_merge)
    later = await store.persist(message("r-3", routed=route("aftersales"),
                                        thread=Thread(ticket_id=source.ticket_id)))
    assert merges == [target.ticket_id]
    assert later.ticket_id == target.ticket_id
    async with store.engine.connect() as conn:
        rows = {r.id: r for r in await conn.execute(select(TICKETS).where(
            TICKETS.c.id.in_([target.ticket_id, source.ticket_id])))}
    assert (rows[source.ticket_id].status, rows[source.ticket_id].merged_into) == (
        "merged", target.ticket_id)


# ---- customers ------------------------------------------------------------------------------

async def test_a_customer_merge_moves_identities_tickets_and_fields_and_leaves_a_tombstone(
        client: Client, store: TicketStore) -> None:
    _, agent_token_ = await agent_token(client, "LiNa", "aftersales")
    _, supervisor = await agent_token(client, "Boss", "aftersales", role="supervisor")
    kept = await store.persist(message("c-1", routed=route("aftersales"), name="李伟",
                                       email="li.wei@example.cn"))
    gone = await store.persist(message("c-2", routed=route("aftersales"), name=None,
                                       identities=[Identity(kind="phone", value="+8613800138000"),
                                                   Identity(kind="email",
                                                            value="wei.li@example.cn")]))
    target, source = kept.customer_id, gone.customer_id
    await store.write(lambda c: (
        c.execute(update(CUSTOMERS).where(CUSTOMERS.c.id == target).values(
            fields={"member_level": "vip"})),
        c.execute(update(CUSTOMERS).where(CUSTOMERS.c.id == source).values(
            fields={"member_level": "normal", "backup_phone": "+8613900139000"},
            vip_level=3))))
    path = f"/api/v1/customers/{target}/merge"
    forbidden = await call(client, "POST", path, 403, agent_token_, json={"source_id": source})
    assert forbidden["error"] == "forbidden" and "supervisor" in forbidden["message"]
    assert (await call(client, "POST", path, 422, supervisor,
                       json={"source_id": target}))["error"] == "merge_into_self"
    assert (await call(client, "POST", path, 404, supervisor,
                       json={"source_id": "nobody"}))["error"] == "customer_not_found"
    await call(client, "POST", path, 422, supervisor, json={"source": source})

    merged = await call(client, "POST", path, 200, supervisor, json={"source_id": source})
    assert merged["name"] == "李伟" and merged["merged_into"] is None
    assert merged["fields"] == {"member_level": "vip", "backup_phone": "+8613900139000"}
    assert merged["vip_level"] == 3
    identities = [(i["kind"], i["value"]) for i in merged["identities"]]
    assert sorted(identities) == [("email", "li.wei@example.cn"), ("email", "wei.li@example.cn"),
                                  ("phone", "+8613800138000")]
    assert len(identities) == len(set(identities))  # each kept once
    assert sorted(t["id"] for t in merged["tickets"]) == sorted([kept.ticket_id,
                                                                 gone.ticket_id])
    tombstone = await call(client, "GET", f"/api/v1/customers/{source}", 200, supervisor)
    assert tombstone["merged_into"] == target
    assert tombstone["identities"] == [] and tombstone["tickets"] == []
    moved = await call(client, "GET", f"/api/v1/tickets/{gone.ticket_id}", 200)
    assert moved["customer_id"] == target
    assert {m["customer_id"] for m in moved["messages"]} == {target}
    found = await call(client, "GET", "/api/v1/customers?identity=phone:%2B8613800138000", 200)
    assert [c["id"] for c in found["items"]] == [target]
    # The target's name is in the moved ticket's search document now.
    assert gone.ticket_id in [i["id"] for i in (await call(
        client, "GET", "/api/v1/search?q=李伟", 200))["items"]]

    refused = await call(client, "PATCH", f"/api/v1/customers/{source}", 409, supervisor,
                         json={"name": "x"})
    assert (refused["error"], refused["fields"]) == ("customer_merged", {"merged_into": target})
    for customer, other in ((source, target), (target, source)):  # a merged one: 409
        again = await call(client, "POST", f"/api/v1/customers/{customer}/merge", 409,
                           supervisor, json={"source_id": other})
        assert again["error"] == "customer_merged"

    [as_source, as_target] = await events(store, "customer.merged")
    assert (as_source.customer_id, as_source.data["after"]) == (source, {"merged_into": target})
    assert as_target.customer_id == target
    assert as_target.data["overwritten"] == {"member_level": "normal"}
    assert as_target.data["before"]["fields"] == {"member_level": "vip"}
    assert as_target.data["after"]["vip_level"] == 3
    assert as_target.data["moved"] == {"identities": 2, "tickets": 1, "messages": 1}
    [ticket_moved] = [e for e in await events(store, "ticket.updated")
                      if e.data.get("reason") == "customer_merged"]
    assert ticket_moved.data["changes"] == {"customer_id": [source, target]}

    # Later messages from a moved identity land on the target (the real persist path).
    later = await store.persist(message("c-3", routed=route("aftersales"), email=None,
                                        identities=[Identity(kind="phone",
                                                             value="+8613800138000")]))
    assert later.customer_id == target
    batch = await store.persist_many([
        message("c-4", routed=route("aftersales"), email="wei.li@example.cn"),
        message("c-5", routed=route("aftersales"), email="WEI.LI@example.cn",
                thread=Thread(ticket_id=gone.ticket_id))])
    assert [r.customer_id for r in batch] == [target, target]
    assert batch[1].ticket_id == gone.ticket_id
    async with store.engine.connect() as conn:
        owners = {r.customer_id for r in await conn.execute(select(TICKETS.c.customer_id))}
    assert owners == {target}


async def test_a_message_planned_before_a_customer_merge_committed_lands_on_the_target(
        client: Client, store: TicketStore, database_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: a batch that resolved its sender to the source customer before the merge
    committed plans again and writes for the target, never for the tombstone."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite writes one transaction at a time: the plan cannot go stale")
    kept = await store.persist(message("q-1", routed=route("aftersales"), email="a@example.cn"))
    gone = await store.persist(message("q-2", routed=route("aftersales"), email="b@example.cn"))
    real_plan = store_module.plan_batch
    merges: list[str] = []

    async def merge_elsewhere() -> None:
        other = TicketStore(make_engine(database_url))
        try:
            merges.append(await other.write(lambda c: merge_customers(
                c, kept.customer_id, gone.customer_id, T0, "admin")))
        finally:
            await other.close()
            await other.engine.dispose()

    def plan_then_merge(*args: Any, **kwargs: Any) -> Any:
        plan = real_plan(*args, **kwargs)
        if not merges:  # the first plan found b@ on the source; the merge commits now
            thread = threading.Thread(target=lambda: asyncio.run(merge_elsewhere()))
            thread.start()
            thread.join()
        return plan

    monkeypatch.setattr(store_module, "plan_batch", plan_then_merge)
    later = await store.persist(message("q-3", routed=route("aftersales"), email="b@example.cn",
                                        thread=Thread(ticket_id=gone.ticket_id)))
    assert merges == [kept.customer_id]
    assert (later.customer_id, later.ticket_id) == (kept.customer_id, gone.ticket_id)
    async with store.engine.connect() as conn:
        owners = {r.customer_id for r in await conn.execute(select(TICKETS.c.customer_id))}
    assert owners == {kept.customer_id}
