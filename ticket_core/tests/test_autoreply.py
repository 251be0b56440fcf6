"""The `auto_replies` acknowledgement: once per ticket, to the opening sender alone, never for
machines' mail."""

from __future__ import annotations

import orjson
import pytest
from sqlalchemy import select

from intake.message import Identity, Thread
from ticket_core.autoreply import AutoReplies, AutoReply, render
from ticket_core.consume import persist_routed
from ticket_core.statements import MESSAGES, OUTBOX
from ticket_core.store import TicketStore

from .builders import message, route

RULES = AutoReplies([
    AutoReply(id="sales_ack", channels=["email"], desks=["sales"], subject="sales", text="s"),
    AutoReply(id="email_ack", channels=["email"], accounts=["support@shop.example"],
              subject="[#{{ticket.number}}] We received your mail: {{ticket.subject}}",
              text="Ticket {{ ticket.number }}"),
])
EMAIL = {"channel": "email", "account": "support@shop.example", "kind": "message",
         "subject": "退货申请"}


async def outgoing(store: TicketStore) -> list[dict[str, object]]:
    async with store.engine.connect() as connection:
        rows = (await connection.execute(
            select(MESSAGES.c.kind, MESSAGES.c.idempotency_key, OUTBOX.c.body)
            .select_from(MESSAGES.join(OUTBOX, OUTBOX.c.message_id == MESSAGES.c.id))
            .where(MESSAGES.c.direction == "out"))).all()
    return [{"kind": r.kind, "key": r.idempotency_key, **orjson.loads(r.body)} for r in rows]


def test_templates_fill_number_and_subject() -> None:
    assert render("[#{{ticket.number}}] {{ ticket.subject }}", 1042, "退货") == "[#1042] 退货"


async def test_a_new_email_ticket_is_acknowledged_once_in_its_thread(
        store: TicketStore) -> None:
    persist = persist_routed(store, auto_replies=RULES)
    opening = message(**EMAIL, routed=route("general"), identities=[
        Identity(kind="email", value="li@example.cn")],
        thread=Thread(message_id="<c1@example.cn>", references=["<root@example.cn>"]))
    await persist([opening])
    await persist([opening])  # redelivered: a duplicate opens nothing, acknowledges nothing
    follow_up = message(**EMAIL, routed=route("general"),
                        thread=Thread(in_reply_to="<c1@example.cn>"))
    await persist([follow_up])
    [ack] = await outgoing(store)
    assert ack["kind"] == "auto_reply" and ack["key"].startswith("auto_reply:email_ack:")
    assert ack["subject"] == "[#1001] We received your mail: 退货申请"
    assert ack["text"] == "Ticket 1001"
    assert ack["to"] == {"kind": "email", "value": "li@example.cn", "verified": False}
    assert ack["thread"]["in_reply_to"] == "<c1@example.cn>"
    assert ack["thread"]["references"] == ["<root@example.cn>", "<c1@example.cn>"]
    assert store.outbox_pending


@pytest.mark.parametrize("flag", ["auto_reply", "bounce", "bulk", "loop", "parse_error",
                                  "spam_suspect"])
async def test_no_acknowledgement_for_a_flagged_opening(store: TicketStore, flag: str) -> None:
    await persist_routed(store, auto_replies=RULES)([
        message(**EMAIL, routed=route("general"), flags=[flag])])
    assert await outgoing(store) == []


async def test_other_channels_accounts_and_desks_follow_their_entries(
        store: TicketStore) -> None:
    persist = persist_routed(store, auto_replies=RULES)
    await persist([message(routed=route("general"))])  # a web form: no entry for it
    await persist([message(**{**EMAIL, "account": "other@shop.example"},
                           routed=route("general"))])
    await persist([message(**{**EMAIL, "account": "other@shop.example"},
                           routed=route("sales"))])
    assert [a["key"].split(":")[1] for a in await outgoing(store)] == ["sales_ack"]
