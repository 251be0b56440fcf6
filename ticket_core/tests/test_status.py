"""The plain status change over the agent API: stored, logged as ticket.updated with changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from intake.message import Thread
from ticket_core.events import envelope
from ticket_core.replies import ReplyChannels
from ticket_core.store import TicketStore

from .builders import message, route
from .test_replies import AUTH, app_for

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


async def test_a_status_change_is_stored_and_logged_once(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    stored = await store.persist(message(routed=route("aftersales"),
                                         thread=Thread(conversation_id="conv-1")))
    client = await aiohttp_client(app_for(store, ReplyChannels()))
    url = f"/api/v1/tickets/{stored.ticket_id}"

    response = await client.patch(url, headers=AUTH, json={"status": "resolved"})
    assert response.status == 200, await response.text()
    assert (await response.json())["status"] == "resolved"
    again = await client.patch(url, headers=AUTH, json={"status": "resolved"})
    assert again.status == 200

    events = [envelope(row) for row in await store.events_after(0, 100)]
    created = events[0]
    assert created["data"]["conversation_id"] == "conv-1"
    updates = [e for e in events if e["type"] == "ticket.updated"]
    assert len(updates) == 1
    assert updates[0]["data"]["changes"] == {"status": ["new", "resolved"]}
    assert updates[0]["data"]["conversation_id"] == "conv-1"
    assert updates[0]["actor"] == "agent" and updates[0]["desk"] == "aftersales"
    by_number = await client.patch(f"/api/v1/tickets/{stored.ticket_number}", headers=AUTH,
                                   json={"status": "open"})
    assert (await by_number.json())["status"] == "open"


async def test_a_bad_status_or_ticket_is_refused(store: TicketStore,
                                                 aiohttp_client: ClientFactory) -> None:
    stored = await store.persist(message(routed=route()))
    client = await aiohttp_client(app_for(store, ReplyChannels()))
    url = f"/api/v1/tickets/{stored.ticket_id}"
    for body in ({"status": "done"}, {}, {"status": "open", "x": 1}):
        response = await client.patch(url, headers=AUTH, json=body)
        assert response.status == 422, body
    # merged is the merge operation's: a known status, never a target of the table.
    response = await client.patch(url, headers=AUTH, json={"status": "merged"})
    assert response.status == 409
    response = await client.patch("/api/v1/tickets/nope", headers=AUTH, json={"status": "open"})
    assert response.status == 404
    response = await client.patch(url, json={"status": "open"})
    assert response.status == 401
