"""The ticket life cycle (issue 17) on SQLite and PostgreSQL: the agent transition table entry by
entry, versions and `If-Match`, reopen counts, the customer's messages (reopen, follow-up of a
closed ticket, a merged ticket's target) and the automatic transitions on the test clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select, update

from intake.config import ConfigDocument
from intake.message import Thread
from ticket_core.clock import TestClock
from ticket_core.events import envelope
from ticket_core.lifecycle import AGENT_TRANSITIONS, parse_if_match
from ticket_core.replies import ReplyChannels
from ticket_core.statements import TICKETS, TIMERS
from ticket_core.store import TicketStore
from ticket_core.timers import LifecycleSettings, Timelines

from .builders import message, route
from .test_replies import AUTH, app_for

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
T0 = datetime(2026, 9, 24, 9, 0, tzinfo=UTC)
STATUSES = ("new", "open", "pending", "on_hold", "resolved", "closed", "merged")
# The issue's table, written out again (not derived from the code under test).
ALLOWED = {
    "new": {"open", "pending", "on_hold", "resolved"},
    "open": {"pending", "on_hold", "resolved"},
    "pending": {"open", "on_hold", "resolved"},
    "on_hold": {"open", "pending", "resolved"},
    "resolved": {"open", "closed"},
    "closed": set(),
    "merged": set(),
}


@pytest.fixture
async def client(store: TicketStore, aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    store.clock = TestClock(T0)
    return await aiohttp_client(app_for(store, ReplyChannels.parse("email")))


async def set_row(store: TicketStore, ticket_id: str, **values: Any) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(update(TICKETS).where(TICKETS.c.id == ticket_id).values(**values))


async def new_ticket(store: TicketStore, key: str = "m-1", **kwargs: Any) -> Any:
    kwargs.setdefault("routed", route("aftersales", skill_group="returns",
                                      category="after_sales", tags=["refund", "vip"]))
    return await store.persist(message(key, channel="email", account="support@example.com",
                                       kind="message", **kwargs))


async def timers_of(store: TicketStore, ticket_id: str) -> list[tuple[str, str, datetime]]:
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(TIMERS).where(
            TIMERS.c.ticket_id == ticket_id, TIMERS.c.kind.in_(("auto_resolve", "auto_close")))
            .order_by(TIMERS.c.id))).all()
    return [(r.kind, r.state, r.due_at) for r in rows]


def test_the_table_in_the_code_is_the_issues() -> None:
    assert {k: set(v) for k, v in AGENT_TRANSITIONS.items()} == ALLOWED


@pytest.mark.parametrize("current", STATUSES)
async def test_each_transition_of_the_table_from(
        current: str, store: TicketStore, client: TestClient[Any, Any]) -> None:
    stored = await new_ticket(store)
    url = f"/api/v1/tickets/{stored.ticket_id}"
    for wanted in STATUSES:
        await set_row(store, stored.ticket_id, status=current)
        response = await client.patch(url, headers=AUTH, json={"status": wanted})
        body = await response.json()
        if wanted == current:  # the same status again: nothing changes
            assert response.status == 200, (current, wanted, body)
            assert body["status"] == current
        elif wanted in ALLOWED[current]:
            assert response.status == 200, (current, wanted, body)
            assert body["status"] == wanted
        else:
            assert response.status == 409, (current, wanted, body)
            assert body["error"] == "invalid_transition"
            allowed = ", ".join(AGENT_TRANSITIONS[current]) or "none (final)"
            assert body["fields"] == {"status": f"allowed from {current}: {allowed}"}
            ticket = await store.get_ticket(stored.ticket_id)
            assert ticket is not None and ticket.status == current  # nothing written


async def test_an_unknown_status_is_422(store: TicketStore,
                                        client: TestClient[Any, Any]) -> None:
    stored = await new_ticket(store)
    for status in ("done", "OPEN", "", None, 3):
        response = await client.patch(f"/api/v1/tickets/{stored.ticket_id}", headers=AUTH,
                                      json={"status": status})
        assert response.status == 422, status
        assert (await response.json())["error"] == "invalid_body"


async def test_the_version_goes_up_with_every_change_and_if_match_refuses_a_stale_write(
        store: TicketStore, client: TestClient[Any, Any]) -> None:
    stored = await new_ticket(store)
    url = f"/api/v1/tickets/{stored.ticket_id}"
    first = await client.get(url, headers=AUTH)
    assert (await first.json())["version"] == 1 and first.headers["ETag"] == '"1"'

    # A customer's message, a note, a status change: each a new version.
    await new_ticket(store, "m-2", thread=Thread(ticket_id=stored.ticket_id))
    assert (await store.get_ticket(stored.ticket_id)).version == 2  # type: ignore[union-attr]
    note = await client.post(f"{url}/notes", headers=AUTH, json={"text": "回电"})
    assert note.status == 201
    assert (await store.get_ticket(stored.ticket_id)).version == 3  # type: ignore[union-attr]

    stale = await client.patch(url, headers={**AUTH, "If-Match": '"1"'},
                               json={"status": "pending"})
    assert stale.status == 412
    assert (await stale.json())["error"] == "version_mismatch"
    assert (await store.get_ticket(stored.ticket_id)).status == "new"  # type: ignore[union-attr]
    for garbage in ("abc", '"-1"', "W/"):
        refused = await client.patch(url, headers={**AUTH, "If-Match": garbage},
                                     json={"status": "pending"})
        assert refused.status == 412, garbage

    fresh = await client.patch(url, headers={**AUTH, "If-Match": '"3"'},
                               json={"status": "pending"})
    assert fresh.status == 200, await fresh.text()
    assert (await fresh.json())["version"] == 4 and fresh.headers["ETag"] == '"4"'
    # The same status again is no change: no new version, If-Match of it still matches.
    again = await client.patch(url, headers={**AUTH, "If-Match": "4"},
                               json={"status": "pending"})
    assert again.status == 200 and (await again.json())["version"] == 4
    anything = await client.patch(url, headers={**AUTH, "If-Match": "*"},
                                  json={"status": "open"})
    assert anything.status == 200 and (await anything.json())["version"] == 5


def test_if_match_spellings() -> None:
    assert [parse_if_match(v) for v in (None, "", "*", '"7"', "7", 'W/"7"', "x", "1e3")] == [
        None, None, None, 7, 7, 7, -1, -1]


async def test_reopens_are_counted_by_agent_and_customer(
        store: TicketStore, client: TestClient[Any, Any]) -> None:
    stored = await new_ticket(store)
    url = f"/api/v1/tickets/{stored.ticket_id}"
    assert (await (await client.patch(url, headers=AUTH, json={"status": "resolved"})).json()
            )["reopened_count"] == 0
    reopened = await (await client.patch(url, headers=AUTH, json={"status": "open"})).json()
    assert (reopened["status"], reopened["reopened_count"]) == ("open", 1)

    await client.patch(url, headers=AUTH, json={"status": "resolved"})
    await new_ticket(store, "m-2", thread=Thread(ticket_id=stored.ticket_id))
    ticket = await store.get_ticket(stored.ticket_id)
    assert ticket is not None and (ticket.status, ticket.reopened_count) == ("open", 2)
    events = [envelope(r) for r in await store.events_after(0, 100)]
    by_customer = [e for e in events if e["type"] == "ticket.updated" and e["actor"] == "customer"]
    assert [e["data"]["changes"] for e in by_customer] == [{"status": ["resolved", "open"]}]
    assert by_customer[0]["data"]["reopened"] is True


@pytest.mark.parametrize("waiting", ["pending", "on_hold", "resolved"])
async def test_a_customer_message_opens_a_waiting_ticket_unless_a_machine_sent_it(
        waiting: str, store: TicketStore) -> None:
    stored = await new_ticket(store)
    await set_row(store, stored.ticket_id, status=waiting)
    for i, flag in enumerate(("auto_reply", "bounce", "loop")):
        await new_ticket(store, f"robot-{i}", thread=Thread(ticket_id=stored.ticket_id),
                         flags=[flag])
        ticket = await store.get_ticket(stored.ticket_id)
        assert ticket is not None and ticket.status == waiting, flag
    await new_ticket(store, "human", thread=Thread(ticket_id=stored.ticket_id))
    ticket = await store.get_ticket(stored.ticket_id)
    assert ticket is not None and ticket.status == "open"
    assert ticket.reopened_count == (1 if waiting == "resolved" else 0)
    assert len(ticket.messages) == 5  # every message joined the ticket


@pytest.mark.parametrize("hint", ["ticket_id", "ticket_number", "in_reply_to",
                                  "conversation_id"])
async def test_a_message_to_a_closed_ticket_makes_one_follow_up_inheriting_its_place(
        hint: str, store: TicketStore) -> None:
    stored = await new_ticket(store, thread=Thread(message_id="<m1@customer>",
                                                   conversation_id="conv-7"))
    # Moved after it was filed: the follow-up goes where the ticket ended up.
    await set_row(store, stored.ticket_id, status="closed", desk="logistics",
                  skill_group="parcels", category="complaint", tags=["late", "vip"])
    hints = {"ticket_id": Thread(ticket_id=stored.ticket_id),
             "ticket_number": Thread(ticket_number=f"[#{stored.ticket_number}]"),
             "in_reply_to": Thread(in_reply_to="<m1@customer>"),
             "conversation_id": Thread(conversation_id="conv-7")}
    follow_up = await new_ticket(store, "again-1", thread=hints[hint],
                                 routed=route("presales", skill_group="sales"))
    assert follow_up.created_ticket and follow_up.ticket_id != stored.ticket_id
    ticket = await store.get_ticket(follow_up.ticket_id)  # type: ignore[arg-type]
    assert ticket is not None
    assert (ticket.follow_up_of, ticket.desk, ticket.skill_group, ticket.category,
            ticket.tags, ticket.status) == (stored.ticket_id, "logistics", "parcels",
                                            "complaint", ["late", "vip"], "new")
    closed = await store.get_ticket(stored.ticket_id)
    assert closed is not None and closed.status == "closed" and len(closed.messages) == 1

    # The same hint again joins the follow-up, in a later batch and within one.
    again = await new_ticket(store, "again-2", thread=hints[hint])
    assert (again.created_ticket, again.ticket_id) == (False, follow_up.ticket_id)
    created = [e for e in map(envelope, await store.events_after(0, 100))
               if e["type"] == "ticket.created"]
    assert created[-1]["data"]["follow_up_of"] == stored.ticket_id


async def test_two_messages_of_one_batch_to_a_closed_ticket_make_one_follow_up(
        store: TicketStore) -> None:
    stored = await new_ticket(store)
    await set_row(store, stored.ticket_id, status="closed")
    batch = [message(f"b-{i}", channel="email", account="support@example.com",
                     kind="message", routed=route(), thread=Thread(ticket_id=stored.ticket_id))
             for i in range(2)]
    first, second = await store.persist_many(batch)
    assert first.created_ticket and not second.created_ticket
    assert second.ticket_id == first.ticket_id != stored.ticket_id


async def test_a_message_to_a_merged_ticket_lands_on_its_target(store: TicketStore) -> None:
    source = await new_ticket(store, thread=Thread(message_id="<src@customer>"))
    target = await new_ticket(store, "target", email="other@example.cn")
    await set_row(store, source.ticket_id, status="merged", merged_into=target.ticket_id)
    await set_row(store, target.ticket_id, status="pending")
    landed = await new_ticket(store, "late", thread=Thread(in_reply_to="<src@customer>"))
    assert (landed.created_ticket, landed.ticket_id) == (False, target.ticket_id)
    moved = await store.get_ticket(target.ticket_id)
    dead = await store.get_ticket(source.ticket_id)
    assert moved is not None and moved.status == "open" and len(moved.messages) == 2
    assert dead is not None and dead.status == "merged" and len(dead.messages) == 1

    # A chain of merges ending on a closed ticket: a follow-up of that one.
    final = await new_ticket(store, "final", email="third@example.cn")
    await set_row(store, target.ticket_id, status="merged", merged_into=final.ticket_id)
    await set_row(store, final.ticket_id, status="closed", category="inquiry")
    chained = await new_ticket(store, "chained", thread=Thread(ticket_id=source.ticket_id))
    ticket = await store.get_ticket(chained.ticket_id)  # type: ignore[arg-type]
    assert chained.created_ticket and ticket is not None
    assert (ticket.follow_up_of, ticket.category) == (final.ticket_id, "inquiry")

    # A merged ticket whose target is gone: a new ticket, never the dead source.
    await set_row(store, source.ticket_id, merged_into="no-such-ticket")
    lost = await new_ticket(store, "lost", thread=Thread(ticket_id=source.ticket_id))
    assert lost.created_ticket and lost.ticket_id != source.ticket_id


async def test_pending_resolves_and_resolved_closes_on_the_test_clock(
        store: TicketStore, client: TestClient[Any, Any]) -> None:
    stored = await new_ticket(store)
    url = f"/api/v1/tickets/{stored.ticket_id}"
    assert (await client.patch(url, headers=AUTH, json={"status": "pending"})).status == 200
    assert await timers_of(store, stored.ticket_id) == [
        ("auto_resolve", "pending", T0 + timedelta(days=7))]
    shown = await (await client.get(url, headers=AUTH)).json()
    assert [t["kind"] for t in shown["timers"]] == ["auto_resolve"]

    moved = await client.post("/api/v1/test-clock", headers=AUTH, json={"advance": "P6DT23H"})
    assert moved.status == 200
    assert (await store.get_ticket(stored.ticket_id)).status == "pending"  # type: ignore[union-attr]
    # Past both due times at once: each fires at its own time, the close 3 days after day 7.
    moved = await client.post("/api/v1/test-clock", headers=AUTH, json={"advance": "P4D"})
    body = await moved.json()
    assert moved.status == 200 and body["fired"] == 2
    assert datetime.fromisoformat(body["now"]) == T0 + timedelta(days=10, hours=23)
    ticket = await store.get_ticket(stored.ticket_id)
    assert ticket is not None and ticket.status == "closed"
    assert await timers_of(store, stored.ticket_id) == [
        ("auto_resolve", "fired", T0 + timedelta(days=7)),
        ("auto_close", "fired", T0 + timedelta(days=10))]
    updates = [e for e in map(envelope, await store.events_after(0, 100))
               if e["type"] == "ticket.updated"]
    assert [(e["actor"], e["data"]["changes"]["status"], e["data"].get("reason"))
            for e in updates] == [
        ("agent", ["new", "pending"], None),
        ("system", ["pending", "resolved"], "auto_resolve"),
        ("system", ["resolved", "closed"], "auto_close")]
    assert [datetime.fromisoformat(e["occurred_at"]) for e in updates[1:]] == [
        T0 + timedelta(days=7), T0 + timedelta(days=10)]


async def test_leaving_the_status_cancels_the_automatic_transition(
        store: TicketStore, client: TestClient[Any, Any]) -> None:
    stored = await new_ticket(store)
    url = f"/api/v1/tickets/{stored.ticket_id}"
    await client.patch(url, headers=AUTH, json={"status": "pending"})
    await client.patch(url, headers=AUTH, json={"status": "open"})  # the agent
    await client.patch(url, headers=AUTH, json={"status": "pending"})
    await new_ticket(store, "reply", thread=Thread(ticket_id=stored.ticket_id))  # the customer
    await client.patch(url, headers=AUTH, json={"status": "resolved"})
    await client.patch(url, headers=AUTH, json={"status": "open"})
    assert [(kind, state) for kind, state, _ in await timers_of(store, stored.ticket_id)] == [
        ("auto_resolve", "cancelled"), ("auto_resolve", "cancelled"),
        ("auto_close", "cancelled")]
    assert (await client.post("/api/v1/test-clock", headers=AUTH,
                              json={"advance": "P30D"})).status == 200
    ticket = await store.get_ticket(stored.ticket_id)
    assert ticket is not None and ticket.status == "open"


async def test_a_timer_finding_its_ticket_in_another_status_is_cancelled(
        store: TicketStore, client: TestClient[Any, Any]) -> None:
    stored = await new_ticket(store)
    await client.patch(f"/api/v1/tickets/{stored.ticket_id}", headers=AUTH,
                       json={"status": "pending"})
    await set_row(store, stored.ticket_id, status="on_hold")  # behind the planner's back
    await client.post("/api/v1/test-clock", headers=AUTH, json={"advance": "P8D"})
    assert (await store.get_ticket(stored.ticket_id)).status == "on_hold"  # type: ignore[union-attr]
    async with store.engine.connect() as conn:
        reason = (await conn.execute(select(TIMERS.c.reason).where(
            TIMERS.c.ticket_id == stored.ticket_id))).scalar_one()
    assert reason == "ticket on_hold"


async def test_the_delays_come_from_the_tickets_section(
        store: TicketStore, client: TestClient[Any, Any]) -> None:
    doc = ConfigDocument(Path("intake.yaml"), {"tickets": {"pending_auto_resolve_after": "2h",
                                           "resolved_auto_close_after": "1d"}})
    store.timelines = Timelines.from_document(doc)
    assert store.timelines.lifecycle == LifecycleSettings(timedelta(hours=2), timedelta(days=1))
    empty = ConfigDocument(Path("intake.yaml"), {})
    assert Timelines.from_document(empty).lifecycle == LifecycleSettings(
        timedelta(days=7), timedelta(days=3))
    unreadable = ConfigDocument(Path("intake.yaml"),
                                {"tickets": {"pending_auto_resolve_after": "soon"}})
    assert Timelines.from_document(unreadable).lifecycle.pending_auto_resolve_after == (
        timedelta(days=7))
    stored = await new_ticket(store)
    await client.patch(f"/api/v1/tickets/{stored.ticket_id}", headers=AUTH,
                       json={"status": "pending"})
    assert (await timers_of(store, stored.ticket_id))[0][2] == T0 + timedelta(hours=2)
    await client.post("/api/v1/test-clock", headers=AUTH, json={"advance": "PT2H"})
    assert (await store.get_ticket(stored.ticket_id)).status == "resolved"  # type: ignore[union-attr]


async def test_a_reply_opens_a_new_ticket(store: TicketStore,
                                          client: TestClient[Any, Any]) -> None:
    stored = await new_ticket(store)
    response = await client.post(f"/api/v1/tickets/{stored.ticket_id}/replies", headers=AUTH,
                                 json={"text": "我们已收到"})
    assert response.status == 201, await response.text()
    ticket = await store.get_ticket(stored.ticket_id)
    assert ticket is not None and ticket.status == "open"


async def test_of_two_writes_with_the_same_if_match_exactly_one_wins(
        store: TicketStore, client: TestClient[Any, Any]) -> None:
    import asyncio

    stored = await new_ticket(store)
    url = f"/api/v1/tickets/{stored.ticket_id}"
    # Each pair allowed from whichever of the pair before won, and never a no-op.
    for pair in (("pending", "on_hold"), ("open", "resolved")):
        version = (await store.get_ticket(stored.ticket_id)).version  # type: ignore[union-attr]
        answers = await asyncio.gather(*(
            client.patch(url, headers={**AUTH, "If-Match": f'"{version}"'},
                         json={"status": status}) for status in pair))
        assert sorted(a.status for a in answers) == [200, 412], pair
        ticket = await store.get_ticket(stored.ticket_id)
        assert ticket is not None and ticket.version > version
