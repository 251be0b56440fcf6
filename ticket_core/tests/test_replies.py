"""Replies over the agent API: stored with their outbox row and event, or refused with a reason."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from intake.message import Attachment, Identity, OutboundMessage
from ticket_core.api import api_routes, auth_middleware
from ticket_core.replies import ReplyChannels
from ticket_core.store import TicketStore
from ticket_core.writes import EVENTS, OUTBOX

from .builders import message, route

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DIGEST = "ab" * 32

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def app_for(store: TicketStore, channels: ReplyChannels) -> web.Application:
    app = web.Application(middlewares=[auth_middleware(TOKEN)])
    app.add_routes(api_routes(store, reply_channels=channels))
    return app


async def outbox_rows(store: TicketStore) -> list[Any]:
    async with store.engine.connect() as conn:
        return list((await conn.execute(select(OUTBOX).order_by(OUTBOX.c.id))).all())


async def event_types(store: TicketStore) -> list[str]:
    async with store.engine.connect() as conn:
        return list((await conn.execute(select(EVENTS.c.type).order_by(EVENTS.c.id)))
                    .scalars().all())


async def test_a_reply_is_stored_pending_with_its_outbox_row_and_event(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    stored = await store.persist(message(channel="email", account="support@example.com",
                                         kind="message", routed=route()))
    client = await aiohttp_client(app_for(store, ReplyChannels.parse("email")))

    response = await client.post(f"/api/v1/tickets/{stored.ticket_id}/replies", headers=AUTH,
                                 json={"text": "Your parcel left today."})

    assert response.status == 201, await response.text()
    body = await response.json()
    assert (body["direction"], body["kind"], body["delivery"]) == (
        "out", "reply", {"status": "pending", "reason": None})
    assert (body["channel"], body["account"]) == ("email", "support@example.com")
    [row] = await outbox_rows(store)
    assert row.routing_key == "email.support@example.com" and row.published_at is None
    outbound = OutboundMessage.model_validate_json(row.body)
    assert str(outbound.id) == body["id"] == row.message_id
    assert outbound.to == Identity(kind="email", value="li.wei@example.cn")
    assert outbound.ticket_number == str(stored.ticket_number)
    # The first public reply also acknowledges the ticket (issue 17).
    assert (await event_types(store))[-2:] == ["message.created", "ticket.acknowledged"]
    ticket = await (await client.get(f"/api/v1/tickets/{stored.ticket_id}",
                                     headers=AUTH)).json()
    assert [m["direction"] for m in ticket["messages"]] == ["in", "out"]
    assert ticket["messages"][1]["delivery"]["status"] == "pending"


async def test_a_ticket_the_web_form_opened_is_answered_on_a_channel_reaching_the_customer(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    stored = await store.persist(message(routed=route()))  # webform, email identity
    channels = ReplyChannels.parse("webform,email", {"email": "support@example.com"})
    client = await aiohttp_client(app_for(store, channels))

    response = await client.post(f"/api/v1/tickets/{stored.ticket_number}/replies",
                                 headers=AUTH, json={"text": "Hello"})

    assert response.status == 201, await response.text()
    body = await response.json()
    assert (body["channel"], body["account"]) == ("email", "support@example.com")


async def test_no_channel_that_can_reach_the_customer_is_422_no_reply_channel(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    stored = await store.persist(message(routed=route()))  # webform, email identity
    client = await aiohttp_client(app_for(store, ReplyChannels.parse("webform,wechat")))

    response = await client.post(f"/api/v1/tickets/{stored.ticket_id}/replies", headers=AUTH,
                                 json={"text": "Hello"})

    assert response.status == 422
    body = await response.json()
    assert body["error"] == "no_reply_channel" and "fields" in body
    assert await outbox_rows(store) == []


@pytest.mark.parametrize("payload", [{"text": ""}, {"text": "   \n"}, {}, {"text": 3},
                                     {"text": "x", "extra": 1}])
async def test_an_empty_or_malformed_reply_is_422_with_fields(
        store: TicketStore, aiohttp_client: ClientFactory, payload: dict[str, Any]) -> None:
    stored = await store.persist(message(channel="email", kind="message", routed=route()))
    client = await aiohttp_client(app_for(store, ReplyChannels.parse("email")))

    response = await client.post(f"/api/v1/tickets/{stored.ticket_id}/replies", headers=AUTH,
                                 data=orjson.dumps(payload))

    assert response.status == 422
    body = await response.json()
    assert body["error"] == "invalid_body" and body["fields"]


async def test_an_unknown_ticket_is_404_and_no_token_is_401(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(app_for(store, ReplyChannels.parse("email")))
    response = await client.post("/api/v1/tickets/nope/replies", headers=AUTH,
                                 json={"text": "Hello"})
    assert response.status == 404
    assert (await response.json())["error"] == "ticket_not_found"
    response = await client.post("/api/v1/tickets/nope/replies", json={"text": "Hello"})
    assert response.status == 401


async def test_attachments_must_be_blobs_a_stored_message_carries(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    attachment = Attachment(filename="label.pdf", content_type="application/pdf", size=3,
                            sha256=DIGEST, blob=f"sha256:{DIGEST}")
    stored = await store.persist(message(channel="email", kind="message", routed=route(),
                                         attachments=[attachment]))
    client = await aiohttp_client(app_for(store, ReplyChannels.parse("email")))
    path = f"/api/v1/tickets/{stored.ticket_id}/replies"

    unknown = await client.post(path, headers=AUTH, json={
        "text": "See attached", "attachments": ["sha256:" + "cd" * 32]})
    known = await client.post(path, headers=AUTH, json={
        "text": "See attached", "attachments": [f"sha256:{DIGEST}"]})

    assert unknown.status == 422
    assert "attachments" in (await unknown.json())["fields"]
    assert known.status == 201
    assert [a["filename"] for a in (await known.json())["attachments"]] == ["label.pdf"]
    [row] = await outbox_rows(store)
    assert OutboundMessage.model_validate_json(row.body).attachments == [attachment]


def test_reply_channels_refuse_unknown_names_and_drop_the_web_form() -> None:
    assert ReplyChannels.parse(" email , webform ,").channels == {"email"}
    with pytest.raises(ValueError, match="INTAKE_TICKET_CORE_REPLY_CHANNELS"):
        ReplyChannels.parse("email,fax")


def test_default_accounts_are_each_channels_first_configured_one(tmp_path: Any) -> None:
    from intake.config import load_document
    from ticket_core.replies import default_accounts

    path = tmp_path / "intake.yaml"
    path.write_text("channels:\n"
                    "  email:\n    accounts:\n      - {id: support@example.com}\n"
                    "      - {id: sales@example.com}\n"
                    "  webform:\n    forms:\n      - {id: contact}\n")
    assert default_accounts(load_document(path)) == {
        "email": "support@example.com", "webform": "contact"}
