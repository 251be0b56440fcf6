"""Desk scope over the whole API: every operation of the OpenAPI document, called with another
desk's token about an after-sales ticket, its customer, attachment, call, agent, token and
notification, answers 404 or 403, or an answer that holds none of them (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from intake.message import Attachment
from ticket_core.api import api_routes, auth_middleware
from ticket_core.db import Call
from ticket_core.notifications import notify
from ticket_core.openapi import build_openapi
from ticket_core.store import TicketStore

from .builders import message, route
from .test_agents import ADMIN_TOKEN, RULES, bearer, call, make_agent, make_token
from .test_api import ClientFactory

SECRET_SUBJECT = "after-sales secret subject"
SECRET_TEXT = "我要退款，订单已签收 after-sales secret text"
DIGEST = "d" * 64


async def after_sales_world(client: TestClient[Any, Any], store: TicketStore) -> dict[str, Any]:
    """An after-sales ticket with everything hanging off it, a presales ticket of the same
    customer, and a presales agent's token."""
    after = await store.persist(message(
        "after-1", routed=route("aftersales"), subject=SECRET_SUBJECT, text=SECRET_TEXT,
        attachments=[Attachment(filename="invoice.pdf", content_type="application/pdf",
                                size=10, sha256=DIGEST, blob="sha256:" + DIGEST)]))
    pre = await store.persist(message("pre-1", routed=route("presales", skill_group=None)))
    li = await make_agent(client, "LiuNa", "aftersales", "sg_aftersales_l1")
    li_token = await make_token(client, li["id"])
    now = store.clock.now()
    [note] = await store.write(lambda c: notify(c, [li["id"]], after.ticket_id, "mention",
                                                {"text": SECRET_TEXT}, now))
    await store.write(lambda c: c.execute(Call.__table__.insert().values(
        line="hotline", call_id="call-after-1", state="ringing", direction="inbound",
        desk="aftersales", customer_id=after.customer_id, call={"call_id": "call-after-1"},
        pop={"open_tickets": [{"id": after.ticket_id, "subject": SECRET_SUBJECT}]},
        history=[], created_at=now, updated_at=now)))
    reply = await call(client, "POST", "/api/v1/quick-replies", 201, json={
        "title": "after-sales secret reply", "desks": ["aftersales"], "text": SECRET_TEXT})
    reminder = await call(client, "POST", f"/api/v1/tickets/{after.ticket_id}/reminders", 201,
                          json={"due_at": (now + timedelta(days=1)).isoformat(),
                                "agent_id": li["id"], "note": SECRET_TEXT})
    zhao = await make_agent(client, "Zhao", "presales", "sg_presales")
    zhao_token = await make_token(client, zhao["id"])
    values = {"ticket_id": after.ticket_id, "customer_id": after.customer_id,
              "sha256": DIGEST, "call_id": "call-after-1", "agent_id": li["id"],
              "token_id": li_token["id"], "notification_id": note,
              "escalation_id": "complaint_warning", "skill_group": "sg_aftersales_l1",
              "quick_reply_id": reply["id"], "reminder_id": reminder["id"]}
    markers = {after.ticket_id, SECRET_SUBJECT, SECRET_TEXT, DIGEST, "call-after-1", li["id"],
               li["email"], li_token["id"], note, reply["id"], "after-sales secret reply"}
    return {"values": values, "markers": markers, "token": bearer(zhao_token["token"]),
            "pre": pre.ticket_id}


async def read_for(response: Any, seconds: float) -> str:
    """What an endless stream sends within `seconds`."""
    chunks: list[bytes] = []

    async def collect() -> None:
        async for chunk in response.content.iter_any():
            chunks.append(chunk)

    try:
        await asyncio.wait_for(collect(), seconds)
    except TimeoutError:
        pass
    response.close()
    return b"".join(chunks).decode()


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    document = build_openapi()
    return [(method.upper(), path, operation)
            for path, item in document["paths"].items()
            for method, operation in item.items()]


def example_body(operation: dict[str, Any]) -> Any:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    return None if content is None else content.get("example", {})


async def test_every_route_with_another_desks_token_is_404_403_or_leaks_nothing(
        store: TicketStore, aiohttp_client: ClientFactory) -> None:
    store.timelines = RULES
    app = web.Application(middlewares=[auth_middleware(ADMIN_TOKEN, store)])
    app.add_routes(api_routes(store))
    client = await aiohttp_client(app)
    world = await after_sales_world(client, store)
    token, markers = world["token"], world["markers"]
    seen: dict[str, int] = {}
    for method, template, operation in operations():
        path = re.sub(r"\{(\w+)\}", lambda m: str(world["values"][m.group(1)]), template)
        params: dict[str, str] = {}
        if template == "/api/v1/customers":
            params["identity"] = "email:li.wei@example.cn"
        if template == "/api/v1/events":
            params["last_event_id"] = "0"  # the whole log, from its first event
        response = await client.request(method, path, headers=token, params=params,
                                        json=example_body(operation))
        if template == "/api/v1/events":
            assert response.status == 200
            body = await read_for(response, 1.0)
        else:
            body = await response.text()
        seen[f"{method} {template}"] = response.status
        assert response.status < 500, (method, path, body)
        if response.status in (403, 404):
            # An error names the path's own id at most, never a field of the ticket.
            assert SECRET_SUBJECT not in body and SECRET_TEXT not in body, (method, path, body)
            continue
        leaked = [m for m in markers if m in body]
        assert not leaked, (method, path, response.status, leaked, body[:500])
        # Operations with a `desk` parameter refuse another desk outright.
        if any(p.get("name") == "desk" for p in operation.get("parameters", [])):
            refused = await call(client, method, template, 403, token,
                                 params={"desk": "aftersales"})
            assert refused["error"] == "desk_not_in_scope"
    # Every operation about the after-sales ticket itself is a 404 (never 403, never 200).
    for name, status in seen.items():
        if "{ticket_id}" in name:
            assert status == 404, (name, status)
    for name in ("GET /api/v1/attachments/{sha256}", "GET /api/v1/calls/{call_id}",
                 "GET /api/v1/agents/{agent_id}",
                 "POST /api/v1/notifications/{notification_id}/read",
                 "PATCH /api/v1/reminders/{reminder_id}"):
        assert seen[name] == 404, (name, seen[name])
    for name in ("POST /api/v1/tokens", "DELETE /api/v1/tokens/{token_id}",
                 "GET /api/v1/decisions", "POST /api/v1/agents",
                 "POST /api/v1/quick-replies", "PATCH /api/v1/quick-replies/{quick_reply_id}",
                 "DELETE /api/v1/quick-replies/{quick_reply_id}"):
        assert seen[name] == 403, (name, seen[name])
    # The same calls with the admin token do see the ticket: the markers are real.
    admin = await call(client, "GET", f"/api/v1/tickets/{world['values']['ticket_id']}", 200,
                       bearer(ADMIN_TOKEN))
    assert admin["subject"] == SECRET_SUBJECT
    customer = await call(client, "GET", f"/api/v1/customers/{world['values']['customer_id']}",
                          200, world["token"])
    assert [t["id"] for t in customer["tickets"]] == [world["pre"]]
