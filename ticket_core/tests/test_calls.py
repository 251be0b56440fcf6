"""Calls in the ticket core: progress pops and never makes a ticket; picks; the record lands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from intake.message import Call, Identity, Message, Thread
from ticket_core.api import api_routes, auth_middleware
from ticket_core.consume import persist_routed
from ticket_core.store import TicketStore

from .builders import message, route
from .test_sse import AUTH, TOKEN, ClientFactory, read_events

T0 = datetime(2026, 12, 5, 1, 30, tzinfo=UTC)
CALLER = "+8613800138000"


def call_message(part: str, state: str, *, call_id: str = "c1", line: str = "hotline",
                 withheld: bool = False, flags: list[str] | None = None,
                 join_latest_open: bool | None = None, **call: Any) -> Message:
    fields: dict[str, Any] = {
        "call_id": call_id, "line": line, "adapter": "generic", "direction": "inbound",
        "from": None if withheld else CALLER, "to": "+864008001234",
        "from_raw": "anonymous" if withheld else "013800138000", "withheld": withheld,
        "state": state, "started_at": T0, "agents": ["1001", "1002"], **call}
    return message(
        f"{call_id}:{part}", channel="telephony", account=line, kind="call", email=None,
        identities=[] if withheld else [Identity(kind="phone", value=CALLER)],
        name="王小明", subject=None if part != "record" else "来电", text="",
        thread=Thread(conversation_id=f"call:{line}:{call_id}",
                      join_latest_open=join_latest_open),
        routed=route("general"), call=Call.model_validate(fields), flags=flags or [])


ANSWERED = {"answered_at": T0 + timedelta(seconds=9), "agent": "1001"}
ENDED = {**ANSWERED, "ended_at": T0 + timedelta(seconds=99), "talk_s": 90.0}


async def client_for(store: TicketStore, aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    app = web.Application(middlewares=[auth_middleware(TOKEN)])
    app.add_routes(api_routes(store))
    return await aiohttp_client(app)


async def test_one_pop_per_call_and_progress_is_never_a_ticket_message(
        store: TicketStore) -> None:
    persist = persist_routed(store)
    # Reordered and repeated: the end first, the ringing last, each twice.
    for part in [call_message("ended", "ended", **ENDED), call_message("answered", "answered",
                 **ANSWERED), call_message("ringing", "ringing")] * 2:
        await persist([part])
    rows = await store.events_after(0)
    assert [r.type for r in rows] == ["call.ringing", "call.answered", "call.ended"]
    pop = rows[0].data
    assert pop["caller"]["number"] == CALLER and pop["caller"]["region"] == "CN"
    assert (pop["lookup"], pop["customer"], pop["agents"]) == ("not_found", None, ["1001", "1002"])
    assert rows[0].desk == "general"
    assert (await store.list_tickets(limit=10)).items == []


async def test_a_pick_puts_the_record_on_the_picked_ticket(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    persist = persist_routed(store)
    earlier = message("earlier", channel="telephony", account="hotline", kind="message",
                      email=None, identities=[Identity(kind="phone", value=CALLER)],
                      routed=route("general"))
    await persist([earlier])
    [ticket] = (await store.list_tickets(limit=10)).items
    await persist([call_message("ringing", "ringing")])
    pop = (await store.events_after(0))[-1].data
    assert pop["lookup"] == "found"
    assert [t["id"] for t in pop["open_tickets"]] == [ticket.id]
    client = await client_for(store, aiohttp_client)
    response = await client.post("/api/v1/calls/c1/pick", json={"ticket_id": "nope"},
                                 headers=AUTH)
    assert (response.status, (await response.json())["error"]) == (422, "unknown_ticket")
    response = await client.post("/api/v1/calls/c1/pick", json={"ticket_id": ticket.id},
                                 headers=AUTH)
    assert response.status == 200
    assert (await response.json())["pick"]["ticket_id"] == ticket.id
    await persist([call_message("record", "completed", **ENDED)])
    await persist([call_message("record", "completed", **ENDED)])  # redelivered
    detail = await store.get_ticket(ticket.id)
    assert detail is not None
    assert [m.kind for m in detail.messages] == ["message", "call"]
    response = await client.get("/api/v1/calls/c1", headers=AUTH)
    body = await response.json()
    assert (body["state"], body["ticket_id"]) == ("completed", ticket.id)
    response = await client.post("/api/v1/calls/c1/pick", json={"new_ticket": True},
                                 headers=AUTH)
    assert (response.status, (await response.json())["error"]) == (409, "call_recorded")
    types = [r.type for r in await store.events_after(0)]
    assert types.count("call.ringing") == 1 and types.count("call.ended") == 1


async def test_unknown_and_ambiguous_calls(store: TicketStore,
                                           aiohttp_client: ClientFactory) -> None:
    persist = persist_routed(store)
    await persist([call_message("ringing", "ringing", line="hotline")])
    await persist([call_message("ringing", "ringing", line="hotline-cs")])
    client = await client_for(store, aiohttp_client)
    response = await client.get("/api/v1/calls/zz", headers=AUTH)
    assert (response.status, (await response.json())["error"]) == (404, "unknown_call")
    response = await client.post("/api/v1/calls/c1/pick", json={"new_ticket": True},
                                 headers=AUTH)
    assert (response.status, (await response.json())["error"]) == (409, "ambiguous_call")
    response = await client.post("/api/v1/calls/c1/pick?line=hotline-cs",
                                 json={"new_ticket": True}, headers=AUTH)
    assert response.status == 200


async def test_the_stream_sends_a_pop_to_its_agents_only(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    client = await client_for(store, aiohttp_client)
    persist = persist_routed(store)
    mine = await client.get("/api/v1/events?types=call.*&agent=1001&last_event_id=0",
                            headers=AUTH)
    await persist([call_message("ringing", "ringing", call_id="other", agents=["2002"])])
    await persist([call_message("ringing", "ringing", call_id="c1")])
    [event] = await read_events(mine, 1)
    assert (event["event"], event["data"]["data"]["call_id"]) == ("call.ringing", "c1")
    mine.close()


async def test_a_withheld_missed_call_pops_withheld_and_gets_its_own_ticket(
        store: TicketStore) -> None:
    persist = persist_routed(store)
    for call_id in ("w1", "w2"):
        await persist([call_message("record", "missed", call_id=call_id, withheld=True,
                                    flags=["withheld_number"],
                                    ended_at=T0 + timedelta(seconds=20))])
    pops = [r.data for r in await store.events_after(0) if r.type == "call.ringing"]
    assert [p["lookup"] for p in pops] == ["withheld", "withheld"]
    tickets = (await store.list_tickets(limit=10)).items
    assert len({t.customer_id for t in tickets}) == 2


async def test_a_picked_ticket_closed_since_gives_the_record_a_new_ticket(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    from sqlalchemy import update

    from ticket_core import db

    persist = persist_routed(store)
    await persist([message("earlier", channel="telephony", account="hotline", kind="message",
                           email=None, identities=[Identity(kind="phone", value=CALLER)],
                           routed=route("general"))])
    [ticket] = (await store.list_tickets(limit=10)).items
    await persist([call_message("ringing", "ringing")])
    client = await client_for(store, aiohttp_client)
    response = await client.post("/api/v1/calls/c1/pick", json={"ticket_id": ticket.id},
                                 headers=AUTH)
    assert response.status == 200
    await store.write(lambda c: c.execute(update(db.Ticket.__table__).where(
        db.Ticket.__table__.c.id == ticket.id).values(status="closed")))
    await persist([call_message("record", "completed", **ENDED)])
    response = await client.get("/api/v1/calls/c1", headers=AUTH)
    landed = (await response.json())["ticket_id"]
    assert landed is not None and landed != ticket.id
