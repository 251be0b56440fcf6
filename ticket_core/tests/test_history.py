"""The audit history (issue 17) on SQLite and PostgreSQL: every kind of change yields its row with
who, before and after; the tables refuse UPDATE and DELETE; pages; desk scope; merged tickets;
rows written in the change's own transaction on both write paths."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, text, update

from intake.message import DeliveryResult, Thread
from ticket_core import store as store_module
from ticket_core.api import api_routes, auth_middleware
from ticket_core.clock import TestClock
from ticket_core.delivery import record_delivery
from ticket_core.events import PlannedEvent
from ticket_core.history import HISTORY
from ticket_core.planner import TicketRef
from ticket_core.replies import ReplyChannels
from ticket_core.statements import EVENTS, TICKETS, CoreWriteStatements
from ticket_core.store import TicketStore, append_events

from .builders import message, route
from .test_agents import ADMIN, ADMIN_TOKEN, RULES, Client, bearer, call, make_agent, make_token
from .test_api import ClientFactory
from .test_fields import tickets_config
from .test_satisfaction import chat, rating
from .test_satisfaction import set_status as force_status

T0 = datetime(2026, 9, 24, 9, 0, tzinfo=UTC)


@pytest.fixture
async def client(store: TicketStore, aiohttp_client: ClientFactory, tmp_path: Path) -> Client:
    store.clock = TestClock(T0)
    store.timelines = RULES
    store.tickets = tickets_config(tmp_path)
    app = web.Application(middlewares=[auth_middleware(ADMIN_TOKEN, store)])
    app.add_routes(api_routes(store, reply_channels=ReplyChannels.parse("email")))
    return await aiohttp_client(app)


async def email_ticket(store: TicketStore, key: str = "m-1", desk: str = "aftersales",
                       **kwargs: Any) -> Any:
    group = "sg_aftersales_l1" if desk == "aftersales" else "sg_presales"
    return await store.persist(message(key, channel="email", account="support@example.com",
                                       kind="message", routed=route(desk, skill_group=group),
                                       **kwargs))


async def history(client: Client, path: str, headers: dict[str, str] | None = None,
                  ) -> list[dict[str, Any]]:
    """Every entry, page by page."""
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
        page = await call(client, "GET", path, 200, headers, params=params)
        entries.extend(page["items"])
        cursor = page["next"]
        if cursor is None:
            return entries


def only(entries: list[dict[str, Any]], action: str, **after: Any) -> dict[str, Any]:
    found = [e for e in entries if e["action"] == action
             and all((e["after"] or {}).get(k) == v for k, v in after.items())]
    assert len(found) == 1, (action, after, [(e["action"], e["after"]) for e in entries])
    return found[0]


async def test_every_kind_of_change_is_a_row_with_who_before_and_after(
        store: TicketStore, client: Client) -> None:
    stored = await email_ticket(store)
    ticket_id = stored.ticket_id
    li = await make_agent(client, "Li", "aftersales", "sg_aftersales_l1")
    token = await make_token(client, li["id"])
    li_headers = bearer(token["token"])
    as_li = f"agent:{li['id']} token:{token['id']}"
    url = f"/api/v1/tickets/{ticket_id}"

    await call(client, "PUT", f"{url}/assignee", 200, json={"agent_id": li["id"]})
    await call(client, "PATCH", url, 200, {**li_headers, "X-Trace-Id": "trace-patch-1"}, json={
        "category": "complaint", "tags": ["refund"], "fields": {"order_no": "20261001-0001"}})
    await call(client, "PATCH", url, 200, li_headers, json={"status": "pending"})
    await call(client, "POST", f"{url}/notes", 201, li_headers, json={"text": "客户很着急"})
    set_reminder = await call(client, "POST", f"{url}/reminders", 201, li_headers, json={
        "due_at": (T0 + timedelta(days=1)).isoformat(), "note": "回访"})
    await call(client, "PATCH", f"/api/v1/reminders/{set_reminder['id']}", 200, li_headers,
               json={"state": "done"})
    await call(client, "PATCH", f"/api/v1/customers/{stored.customer_id}", 200,
               json={"name": "李伟"})
    again = message("m-2", channel="email", account="support@example.com", kind="message",
                    thread=Thread(ticket_id=ticket_id), text="还没收到")
    await store.persist(again)
    reply = await call(client, "POST", f"{url}/replies", 201, li_headers, json={"text": "您好"})
    await store.write(lambda c: record_delivery(c, DeliveryResult(
        outbound_id=uuid.UUID(reply["id"]), channel="email", account="support@example.com",
        status="sent"), T0))
    await call(client, "POST", f"{url}/transfer", 200, li_headers, json={
        "to": {"skill_group": "sg_presales"}, "note": "转售前"})

    # Li is the first contact: out of their desks now, they still read the history.
    entries = await history(client, f"{url}/history", li_headers)
    assert entries == await history(client, f"{url}/history")
    assert [e["id"] for e in entries] == sorted(e["id"] for e in entries)
    assert all(e["ticket_id"] == ticket_id for e in entries)

    created = only(entries, "ticket.created")
    assert (created["actor"], created["before"]) == ("customer", None)
    assert created["trace_id"] is not None
    assigned = only(entries, "ticket.updated", assignee_id=li["id"])
    assert (assigned["actor"], assigned["before"]) == ("admin", {"assignee_id": None})
    assert assigned["after"]["reason"] and "strategy" in assigned["after"]["assignment"]
    opened = only(entries, "ticket.updated", status="open", reason="assigned")
    assert opened["before"] == {"status": "new"}
    patched = only(entries, "ticket.updated", category="complaint")
    assert patched["actor"] == as_li and patched["trace_id"] == "trace-patch-1"
    assert patched["before"] == {"category": None, "tags": [], "fields": {}}
    assert patched["after"] == {"category": "complaint", "tags": ["refund"],
                                "fields": {"order_no": "20261001-0001"}}
    pending = only(entries, "ticket.updated", status="pending")
    assert (pending["actor"], pending["before"]) == (as_li, {"status": "open"})
    note = only(entries, "note.created", text="客户很着急")
    assert note["actor"] == as_li
    transfer_note = only(entries, "note.created", text="转售前")  # the transfer's own note
    reminder = only(entries, "reminder.created")
    assert (reminder["actor"], reminder["after"]["note"]) == (as_li, "回访")
    done = only(entries, "reminder.updated")
    assert (done["actor"], done["before"]["state"], done["after"]["state"]) == (
        as_li, "pending", "done")
    inbound = only(entries, "message.created", direction="in", message_id=(
        await store.persist(again)).message_id)
    assert (inbound["actor"], inbound["trace_id"]) == ("customer", again.trace_id)
    [reopened] = [e for e in entries if e["action"] == "ticket.updated"
                  and e["actor"] == "customer"]
    assert (reopened["before"], reopened["after"]) == ({"status": "pending"}, {"status": "open"})
    assert reopened["trace_id"] == again.trace_id
    replied = only(entries, "message.created", direction="out", kind="reply")
    assert replied["actor"] == as_li and replied["after"]["message_id"] == reply["id"]
    delivered = only(entries, "message.delivery_updated")
    assert delivered["actor"] == "connector:email"
    assert (delivered["before"]["delivery_status"], delivered["after"]["delivery_status"]) == (
        "pending", "sent")
    moved = only(entries, "ticket.transferred")
    assert moved["actor"] == as_li
    assert moved["before"] == {"desk": "aftersales", "skill_group": "sg_aftersales_l1",
                               "assignee_id": li["id"]}
    assert (moved["after"]["desk"], moved["after"]["note"]) == ("presales", "转售前")
    assert moved["after"]["note_id"] == transfer_note["after"]["note_id"]
    # Domain time: the test clock's, for every change an agent made.
    assert datetime.fromisoformat(patched["at"]) == T0

    customer = await history(client, f"/api/v1/customers/{stored.customer_id}/history")
    renamed = only(customer, "customer.updated")
    assert (renamed["ticket_id"], renamed["actor"]) == (None, "admin")
    assert (renamed["before"], renamed["after"]) == ({"name": "Li Wei"}, {"name": "李伟"})
    assert [e["id"] for e in customer] == sorted([*(e["id"] for e in entries), renamed["id"]])


async def test_a_timer_is_the_actor_of_what_it_changes(store: TicketStore,
                                                        client: Client) -> None:
    stored = await email_ticket(store)
    url = f"/api/v1/tickets/{stored.ticket_id}"
    await call(client, "PATCH", url, 200, json={"status": "pending"})
    await call(client, "POST", "/api/v1/test-clock", 200, json={"advance": "P7DT1H"})
    resolved = only(await history(client, f"{url}/history"), "ticket.updated",
                    status="resolved")
    assert resolved["actor"] == "system:auto_resolve"
    assert resolved["before"] == {"status": "pending"}
    assert datetime.fromisoformat(resolved["at"]) == T0 + timedelta(days=7)


async def test_a_rating_replacing_another_keeps_both(store: TicketStore,
                                                      client: Client) -> None:
    ticket = await store.persist(chat("c-1"))
    await force_status(store, str(ticket.ticket_id), "resolved")
    await store.persist(rating("r-1", 2, 0, comment=None))
    await store.persist(rating("r-2", 5, 30))
    entries = [e for e in await history(client, f"/api/v1/tickets/{ticket.ticket_id}/history")
               if e["action"] == "satisfaction.answered"]
    assert [(e["before"]["satisfaction"] or {}).get("score") for e in entries] == [None, 2]
    assert [e["after"]["satisfaction"]["score"] for e in entries] == [2, 5]


async def test_rows_are_append_only_in_the_database(store: TicketStore) -> None:
    await email_ticket(store)
    for statement in ("UPDATE history SET actor = 'someone else'", "DELETE FROM history"):
        with pytest.raises(sa_exc.DBAPIError, match="append-only"):
            async with store.engine.begin() as connection:
                await connection.execute(text(statement))
    async with store.engine.connect() as connection:
        actors = (await connection.execute(select(HISTORY.c.actor))).scalars().all()
    assert actors and "someone else" not in actors


async def test_pages_follow_the_cursor_oldest_first(store: TicketStore, client: Client) -> None:
    stored = await email_ticket(store)
    url = f"/api/v1/tickets/{stored.ticket_number}"
    for n in range(4):
        await call(client, "POST", f"{url}/notes", 201, json={"text": f"note {n}"})
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await call(client, "GET", f"{url}/history", 200,
                          params={"limit": "2", **({"cursor": cursor} if cursor else {})})
        assert len(page["items"]) <= 2
        seen.extend(e["id"] for e in page["items"])
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    # ticket.created, message.created, four notes: three pages, each entry once, in order.
    assert pages == 3 and len(seen) == 6 and seen == sorted(set(seen))
    for params in ({"cursor": "nope"}, {"limit": "0"}, {"limit": "x"}, {"since": "1"}):
        refused = await call(client, "GET", f"{url}/history", 400, params=params)
        assert refused["error"] == "invalid_parameter"
    assert (await call(client, "GET", "/api/v1/tickets/999999/history", 404))["error"] == \
        "ticket_not_found"
    assert (await call(client, "GET", "/api/v1/customers/nobody/history", 404))["error"] == \
        "customer_not_found"
    assert (await client.get(f"{url}/history")).status == 401


async def test_another_desks_token_sees_none_of_the_tickets_history(
        store: TicketStore, client: Client) -> None:
    after = await email_ticket(store, "after-1", subject="after-sales secret")
    pre = await email_ticket(store, "pre-1", desk="presales")
    await call(client, "POST", f"/api/v1/tickets/{after.ticket_id}/notes", 201,
               json={"text": "after-sales secret note"})
    await call(client, "PATCH", f"/api/v1/customers/{after.customer_id}", 200,
               json={"name": "李伟"})
    zhao = await make_agent(client, "Zhao", "presales", "sg_presales")
    zhao_headers = bearer((await make_token(client, zhao["id"]))["token"])

    refused = await call(client, "GET", f"/api/v1/tickets/{after.ticket_id}/history", 404,
                         zhao_headers)
    assert refused["error"] == "ticket_not_found"
    await call(client, "GET", f"/api/v1/tickets/{after.ticket_number}/history", 404,
               zhao_headers)
    response = await client.get(f"/api/v1/customers/{after.customer_id}/history",
                                headers=zhao_headers)
    body = await response.text()
    assert response.status == 200
    assert after.ticket_id not in body and "secret" not in body
    entries = (await response.json())["items"]
    assert {e["ticket_id"] for e in entries} == {pre.ticket_id, None}
    everything = await history(client, f"/api/v1/customers/{after.customer_id}/history")
    assert {e["ticket_id"] for e in everything} == {after.ticket_id, pre.ticket_id, None}


async def test_a_tickets_history_includes_the_tickets_merged_into_it(
        store: TicketStore, client: Client) -> None:
    target = await email_ticket(store, "target")
    source = await email_ticket(store, "source", subject="another order")
    older = await email_ticket(store, "older", subject="an older order")
    await call(client, "POST", f"/api/v1/tickets/{source.ticket_id}/notes", 201,
               json={"text": "on the source"})
    async with store.engine.begin() as connection:  # the merge's own rows: not this test's
        await connection.execute(update(TICKETS).where(TICKETS.c.id == source.ticket_id)
                                 .values(status="merged", merged_into=target.ticket_id))
        await connection.execute(update(TICKETS).where(TICKETS.c.id == older.ticket_id)
                                 .values(status="merged", merged_into=source.ticket_id))
    entries = await history(client, f"/api/v1/tickets/{target.ticket_id}/history")
    assert {e["ticket_id"] for e in entries} == {target.ticket_id, source.ticket_id,
                                                 older.ticket_id}
    assert [e["id"] for e in entries] == sorted(e["id"] for e in entries)
    assert only(entries, "note.created")["ticket_id"] == source.ticket_id
    # The source's own history stays its own.
    own = await history(client, f"/api/v1/tickets/{source.ticket_id}/history")
    assert target.ticket_id not in {e["ticket_id"] for e in own}


async def test_a_customers_history_includes_the_own_changes_of_customers_merged_into_it(
        store: TicketStore, client: Client) -> None:
    target = await email_ticket(store, "t", email="wang@example.cn")
    source = await email_ticket(store, "s", email="wang.fang@example.cn")
    assert target.customer_id != source.customer_id
    await call(client, "PATCH", f"/api/v1/customers/{source.customer_id}", 200,
               json={"name": "王芳"})
    await call(client, "POST", f"/api/v1/customers/{target.customer_id}/merge", 200,
               json={"source_id": source.customer_id})
    entries = await history(client, f"/api/v1/customers/{target.customer_id}/history")
    renamed = only(entries, "customer.updated")
    assert renamed["after"]["name"] == "王芳" and renamed["customer_id"] == source.customer_id
    assert {e["ticket_id"] for e in entries} >= {target.ticket_id, source.ticket_id}


async def history_count(store: TicketStore) -> tuple[int, int]:
    async with store.engine.connect() as connection:
        return ((await connection.execute(select(func.count()).select_from(HISTORY)))
                .scalar_one(),
                (await connection.execute(select(func.count()).select_from(EVENTS)))
                .scalar_one())


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "core"])
async def test_a_rolled_back_persist_leaves_no_history(
        store: TicketStore, monkeypatch: pytest.MonkeyPatch, fast_path: bool) -> None:
    if not fast_path and store.dialect != "sqlite":
        pytest.skip("PostgreSQL has one write path")
    writer = TicketStore(store.engine, sqlite_fast_path=fast_path)
    try:
        await writer.persist(message("kept"))
        assert await history_count(store) == (2, 2)

        def fail(*_args: Any) -> Any:
            raise RuntimeError("after the rows were written")

        # Everything is written when the results are read: the failure rolls it all back.
        monkeypatch.setattr(store_module, "finish_results", fail)
        with pytest.raises(RuntimeError):
            await writer.persist_many([message("lost-1"), message("lost-2", email="b@x.cn")])
        assert await history_count(store) == (2, 2)
    finally:
        await writer.close()


async def test_a_rolled_back_write_leaves_no_history(store: TicketStore) -> None:
    stored = await email_ticket(store)
    before = await history_count(store)

    def work(connection: Any) -> None:
        ref = TicketRef(id=stored.ticket_id, number=stored.ticket_number, status="new",
                        customer_id=stored.customer_id, channel="email", desk="aftersales")
        append_events(CoreWriteStatements(connection), [PlannedEvent(
            "ticket.updated", T0, ref, stored.customer_id, "agent",
            {"changes": {"priority": ["normal", "high"]}})])
        raise RuntimeError("after the rows were written")

    with pytest.raises(RuntimeError):
        await store.write(work)
    assert await history_count(store) == before


async def test_call_progress_is_no_history_and_the_trace_comes_from_the_request(
        store: TicketStore, client: Client) -> None:
    stored = await email_ticket(store)
    response = await client.post(f"/api/v1/tickets/{stored.ticket_id}/notes", json={
        "text": "traced"}, headers={**ADMIN, "X-Trace-Id": "bad trace id with spaces"})
    assert response.status == 201
    generated = response.headers["X-Trace-Id"]
    assert generated != "bad trace id with spaces" and len(generated) == 32
    note = only(await history(client, f"/api/v1/tickets/{stored.ticket_id}/history"),
                "note.created")
    assert note["trace_id"] == generated
    ref = TicketRef(id=stored.ticket_id, number=stored.ticket_number, status="new",
                    customer_id=stored.customer_id, channel="email", desk="aftersales")
    before = await history_count(store)
    await store.write(lambda c: append_events(CoreWriteStatements(c), [PlannedEvent(
        "call.ringing", T0, ref, stored.customer_id, "connector:telephony", {})]))
    assert await history_count(store) == (before[0], before[1] + 1)
