"""The ticket life cycle (issue 17) with the gateway running on the real RabbitMQ: customer mail
through the router moves the ticket (pending, on_hold, resolved → open; a machine's mail
never), the resolution's satisfaction link is answered on the ticket core's port, a note stays
off intake.outbound while the reply goes out, the test clock resolves and closes the ticket,
and mail to the closed ticket makes a follow-up where the ticket was."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from intake.message import Identity, Message, Sender, Thread, utcnow
from intake.settings import IntakeSettings
from tests.e2e.test_replies_and_events import email_connector
from tests.e2e.test_webform_to_ticket import Gateway, find_ticket, running_gateway
from tests.support import eventually

ACCOUNT = "support@example.com"


@pytest.fixture
async def gateway(settings: IntakeSettings,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("INTAKE_TEST_CLOCK", "1")  # from now, moved by POST /test-clock
    monkeypatch.setenv("INTAKE_TICKET_CORE_REPLY_CHANNELS", "email")
    monkeypatch.setenv("INTAKE_TICKET_CORE_RELAY_POLL_S", "0.2")
    async with running_gateway(settings, monkeypatch) as gw:
        yield gw


def mail(n: int, *, in_reply_to: str | None = None, flags: list[str] | None = None) -> Message:
    return Message(idempotency_key=f"email:{ACCOUNT}:<m{n}@customer>", channel="email",
                   account=ACCOUNT, kind="message",
                   sender=Sender(name="Li Wei", identities=[
                       Identity(kind="email", value="li.wei@example.cn")]),
                   subject="Order 1042", text=f"mail {n}", received_at=utcnow(),
                   thread=Thread(message_id=f"<m{n}@customer>", in_reply_to=in_reply_to),
                   flags=flags or [])  # type: ignore[arg-type]


async def test_customer_mail_agent_changes_and_the_test_clock_walk_the_life_cycle(
        gateway: Gateway, settings: IntakeSettings) -> None:
    gw = gateway
    secret = f"note-{uuid.uuid4().hex}"
    async with email_connector(settings) as (bus, taken), aiohttp.ClientSession() as http:

        async def send(message: Message) -> None:
            await bus.publish("inbound", f"email.{ACCOUNT}", message.model_dump_json().encode())

        async def ticket(ticket_id: str) -> dict[str, Any]:
            async with http.get(f"{gw.api}/api/v1/tickets/{ticket_id}",
                                headers=gw.headers()) as response:
                assert response.status == 200
                found: dict[str, Any] = await response.json()
                return found

        async def patch(ticket_id: str, status: str) -> dict[str, Any]:
            async with http.patch(f"{gw.api}/api/v1/tickets/{ticket_id}", headers=gw.headers(),
                                  json={"status": status}) as response:
                assert response.status == 200, await response.text()
                changed: dict[str, Any] = await response.json()
                return changed

        async def has(ticket_id: str, messages: int, status: str) -> bool:
            found = await ticket(ticket_id)
            inbound = [m for m in found["messages"] if m["direction"] == "in"]
            return len(inbound) == messages and found["status"] == status

        await send(mail(1))
        first = await find_ticket(http, gw, idempotency_key=f"email:{ACCOUNT}:<m1@customer>")
        tid = first["id"]
        inbound = 1

        # pending and on_hold open again on the customer's mail; an out-of-office never.
        for waiting in ("pending", "on_hold"):
            await patch(tid, waiting)
            inbound += 1
            await send(mail(inbound, in_reply_to="<m1@customer>", flags=["auto_reply"]))
            assert await eventually(lambda n=inbound, w=waiting: has(tid, n, w), timeout=20)
            inbound += 1
            await send(mail(inbound, in_reply_to="<m1@customer>"))
            assert await eventually(lambda n=inbound: has(tid, n, "open"), timeout=20)
        await patch(tid, "resolved")
        # The resolution's satisfaction request goes out (the example's `on_resolve`); its
        # link's rating page answers on the ticket core's own port, without a bearer token.
        assert await eventually(lambda: any(t.kind == "satisfaction_request" for t in taken),
                                timeout=20)
        [asked] = [t for t in taken if t.kind == "satisfaction_request"]
        token = asked.text.rsplit("/csat/", 1)[1]
        async with http.get(f"{gw.api}/csat/{token}") as response:
            assert response.status == 200 and 'lang="zh-CN"' in await response.text()
        async with http.post(f"{gw.api}/csat/{token}", data={"score": "4"}) as response:
            assert response.status == 200, await response.text()
        assert (await ticket(tid))["satisfaction"]["score"] == 4
        inbound += 1
        await send(mail(inbound, in_reply_to="<m1@customer>"))
        assert await eventually(lambda n=inbound: has(tid, n, "open"), timeout=20)
        assert (await ticket(tid))["reopened_count"] == 1

        # A note and a reply: the reply goes out, nothing of the note does.
        async with http.post(f"{gw.api}/api/v1/tickets/{tid}/notes", headers=gw.headers(),
                             json={"text": f"{secret} 内部备注", "mentions": ["agent-1"]}
                             ) as response:
            assert response.status == 201
        async with http.post(f"{gw.api}/api/v1/tickets/{tid}/replies", headers=gw.headers(),
                             json={"text": "已为您退款"}) as response:
            assert response.status == 201, await response.text()
        assert await eventually(lambda: any(t.kind == "reply" for t in taken), timeout=20)
        assert [t.text for t in taken if t.kind == "reply"] == ["已为您退款"]
        assert all(secret not in t.model_dump_json() for t in taken)

        # The test clock: 7 days pending → resolved, 3 days resolved → closed.
        await patch(tid, "pending")
        for advance, status in (("P7D", "resolved"), ("P3D", "closed")):
            async with http.post(f"{gw.api}/api/v1/test-clock", headers=gw.headers(),
                                 json={"advance": advance}) as response:
                assert response.status == 200, await response.text()
            assert (await ticket(tid))["status"] == status

        # Mail to the closed ticket: a follow-up where it was; the closed one stays closed.
        inbound += 1
        await send(mail(inbound, in_reply_to="<m1@customer>"))
        follow_up = await find_ticket(
            http, gw, idempotency_key=f"email:{ACCOUNT}:<m{inbound}@customer>")
        assert follow_up["id"] != tid and follow_up["follow_up_of"] == tid
        assert (follow_up["desk"], follow_up["skill_group"]) == (first["desk"],
                                                                 first["skill_group"])
        closed = await ticket(tid)
        assert closed["status"] == "closed"
        assert len([m for m in closed["messages"] if m["direction"] == "in"]) == inbound - 1
