"""Internal notes (issue 17): stored under `notes`, never a message, and nothing of them on
`intake.outbound` or `intake.events` (the real RabbitMQ, with the relay running)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from intake.bus import Bus
from intake.message import OutboundMessage
from tests.support import eventually
from ticket_core.events import envelope
from ticket_core.relay import Relay
from ticket_core.replies import ReplyChannels
from ticket_core.store import TicketStore

from .builders import message, route
from .test_relay import delete_queues, events_seen, running
from .test_replies import AUTH, app_for

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


async def email_ticket(store: TicketStore) -> str:
    stored = await store.persist(message(channel="email", account="support@example.com",
                                         kind="message", routed=route()))
    assert stored.ticket_id is not None
    return stored.ticket_id


async def test_a_note_is_shown_under_notes_and_never_among_messages(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    ticket_id = await email_ticket(store)
    client = await aiohttp_client(app_for(store, ReplyChannels.parse("email")))
    url = f"/api/v1/tickets/{ticket_id}/notes"

    response = await client.post(url, headers=AUTH, json={
        "text": "客户很着急，周五前回电", "mentions": ["agent-7", " agent-7", "agent-9"]})
    assert response.status == 201, await response.text()
    note = await response.json()
    assert (note["ticket_id"], note["text"], note["mentions"], note["author"]) == (
        ticket_id, "客户很着急，周五前回电", ["agent-7", "agent-9"], "admin")
    second = await client.post(url, headers=AUTH, json={"text": "已回电"})
    assert second.status == 201 and (await second.json())["mentions"] == []

    detail = await (await client.get(f"/api/v1/tickets/{ticket_id}", headers=AUTH)).json()
    assert [n["text"] for n in detail["notes"]] == ["客户很着急，周五前回电", "已回电"]
    assert [m["text"] for m in detail["messages"]] == ["我的订单还没有到"]
    listed = await (await client.get("/api/v1/tickets", headers=AUTH)).json()
    assert "notes" not in listed["items"][0]  # the detail only
    by_number = await client.post(f"/api/v1/tickets/{detail['number']}/notes", headers=AUTH,
                                  json={"text": "by number"})
    assert by_number.status == 201
    events = [envelope(r) for r in await store.events_after(0, 100)]
    noted = [e for e in events if e["type"] == "note.created"]
    assert [e["data"]["mentions"] for e in noted] == [["agent-7", "agent-9"], [], []]
    assert all("text" not in e["data"] for e in noted)


async def test_a_bad_note_is_refused(store: TicketStore,
                                     aiohttp_client: ClientFactory) -> None:
    ticket_id = await email_ticket(store)
    client = await aiohttp_client(app_for(store, ReplyChannels()))
    url = f"/api/v1/tickets/{ticket_id}/notes"
    for body in ({}, {"text": ""}, {"text": "  \n"}, {"text": "a\x00b"}, {"text": 3},
                 {"text": "x", "mentions": "agent-7"}, {"text": "x", "mentions": [""]},
                 {"text": "x", "extra": 1}):
        response = await client.post(url, headers=AUTH, json=body)
        assert response.status == 422, body
    bad_json = await client.post(url, headers=AUTH, data=b"{")
    assert bad_json.status in (400, 422)
    missing = await client.post("/api/v1/tickets/nope/notes", headers=AUTH, json={"text": "x"})
    assert missing.status == 404
    assert (await client.post(url, json={"text": "x"})).status == 401
    # Over aiohttp's client_max_size (1 MiB): the API's JSON error, as the document says.
    huge = await client.post(url, headers=AUTH, json={"text": "长" * 1024**2})
    assert (huge.status, (await huge.json())["error"]) == (413, "body_too_large")
    ticket = await store.get_ticket(ticket_id)
    assert ticket is not None and ticket.notes == [] and ticket.version == 1


async def test_a_notes_text_is_in_no_outbound_payload(
        store: TicketStore, bus: Bus, aiohttp_client: ClientFactory) -> None:
    """A note and a reply with the relay running: the reply reaches intake.outbound, nothing
    carries the note's text there or on intake.events."""
    secret = f"internal-{uuid.uuid4().hex}"
    taken: list[OutboundMessage] = []

    async def connector(outbound: OutboundMessage) -> None:
        taken.append(outbound)

    # Bound to every key of intake.outbound: whatever the ticket core sends, to any channel.
    bus.consume("outbound.all", connector, OutboundMessage, binding=("outbound", "#"))
    await asyncio.sleep(0.5)
    client = await aiohttp_client(app_for(store, ReplyChannels.parse("email")))
    try:
        async with events_seen(bus) as seen, running(Relay(store, bus, poll_s=0.2)):
            ticket_id = await email_ticket(store)
            note = await client.post(f"/api/v1/tickets/{ticket_id}/notes", headers=AUTH,
                                     json={"text": f"{secret} 客户是记者，谨慎回复",
                                           "mentions": ["agent-7"]})
            assert note.status == 201
            reply = await client.post(f"/api/v1/tickets/{ticket_id}/replies", headers=AUTH,
                                      json={"text": "您好，我们已经在处理。"})
            assert reply.status == 201
            await eventually(lambda: len(taken) == 1, timeout=15)
            await eventually(lambda: any(e.type == "note.created" for e in seen), timeout=15)
            await asyncio.sleep(0.5)  # anything else it would send
        assert [t.text for t in taken] == ["您好，我们已经在处理。"]
        assert all(secret not in t.model_dump_json() for t in taken)
        assert all(secret not in e.model_dump_json() for e in seen)
        ticket = await store.get_ticket(ticket_id)
        assert ticket is not None and secret in ticket.notes[0].text
        assert all(secret not in m.text for m in ticket.messages)
    finally:
        await bus.stop_consumers()
        await delete_queues(bus, "outbound.all")
