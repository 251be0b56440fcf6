"""The `auto_replies` acknowledgement: once per ticket, to the opening sender alone, never for
machines' mail."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from sqlalchemy import select

from intake.calendars import as_spec, compile_calendar
from intake.config import load_document
from intake.errors import ConfigInvalid
from intake.message import Identity, Thread
from ticket_core.autoreply import AutoReplies, AutoReply, load_auto_replies, render
from ticket_core.consume import persist_routed
from ticket_core.statements import MESSAGES, OUTBOX
from ticket_core.store import TicketStore
from ticket_core.timers import Timelines

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


# ---- issue 17: the kernel's placeholders, a limit per recipient, outside business hours -----

async def test_placeholders_render_once_and_an_unresolved_one_sends_nothing(
        store: TicketStore) -> None:
    rules = AutoReplies([
        AutoReply(id="named", accounts=["support@shop.example"], subject="#{{ticket.number}}",
                  text='{{customer.name | default: "您"}}好，工单号 {{ticket.number}}。'),
        AutoReply(id="member", accounts=["vip@shop.example"], subject="VIP",
                  text="尊敬的{{customer.fields.member_level}}会员"),
    ])
    persist = persist_routed(store, auto_replies=rules)
    await persist([message(**EMAIL, routed=route("general"), name="{{agent.name}}",
                           email="sly@example.cn")])
    await persist([message(**EMAIL, routed=route("general"), name=None,
                           email="anon@example.cn")])
    # No member level: no value, no default, so no "尊敬的会员" with a hole; nothing is sent.
    await persist([message(**{**EMAIL, "account": "vip@shop.example"},
                           routed=route("general"), email="vip@example.cn")])
    texts = [a["text"] for a in await outgoing(store)]
    assert texts == ["{{agent.name}}好，工单号 1001。", "您好，工单号 1002。"]


async def test_at_most_three_per_recipient_within_ten_minutes_across_tickets(
        store: TicketStore) -> None:
    rules = AutoReplies([AutoReply(id="ack", subject="#{{ticket.number}}", text="收到")])
    persist = persist_routed(store, auto_replies=rules)
    for n in range(5):  # a loop, or a customer opening ticket after ticket
        await persist([message(f"loop-{n}", **EMAIL, routed=route("general"))])
    await persist([message("other", **EMAIL, routed=route("general"), email="other@example.cn")])
    sent = await outgoing(store)
    assert len(sent) == 4
    assert [a["to"]["value"] for a in sent].count("li.wei@example.cn") == 3
    unlimited = AutoReplies([AutoReply(id="all", subject="s", text="t",
                                       max_per_recipient=None)])
    await persist_routed(store, auto_replies=unlimited)([message("more", **EMAIL,
                                                                 routed=route("x"))])
    assert len(await outgoing(store)) == 5


async def test_outside_business_hours_answers_only_while_the_desk_is_closed(
        store: TicketStore) -> None:
    calendar, _ = compile_calendar(as_spec({
        "id": "office", "timezone": "Asia/Shanghai",
        "hours": {"mon-fri": ["09:00-12:00", "13:30-18:00"]}}))
    store.timelines = Timelines(calendars={"office": calendar},
                                desk_calendar={"aftersales": "office"})
    rules = AutoReplies([
        AutoReply(id="after_hours", on="outside_business_hours", subject="下班",
                  text="现在是非工作时间，我们将在工作日 9:00 后回复。"),
        AutoReply(id="ack", subject="收到", text="已收到您的请求，工单号 {{ticket.number}}。"),
    ])
    persist = persist_routed(store, auto_replies=rules)
    shanghai = ZoneInfo("Asia/Shanghai")
    for key, when in (("lunch", datetime(2026, 9, 24, 12, 30, tzinfo=shanghai)),
                      ("open", datetime(2026, 9, 24, 10, 0, tzinfo=shanghai)),
                      ("evening", datetime(2026, 9, 24, 20, 0, tzinfo=shanghai))):
        await persist([message(key, **EMAIL, routed=route("aftersales"), received_at=when,
                               email=f"{key}@example.cn")])
    assert [a["key"].split(":")[1] for a in await outgoing(store)] == [
        "after_hours", "ack", "after_hours"]


def test_config_check_names_a_placeholder_an_auto_reply_cannot_fill(tmp_path: Path) -> None:
    path = tmp_path / "intake.yaml"
    path.write_text("auto_replies:\n  - id: ack\n    subject: hi\n"
                    "    text: '单号 {{input.tracking_no}} {{ticket.nmber}}'\n", encoding="utf-8")
    with pytest.raises(ConfigInvalid) as caught:
        load_auto_replies(load_document(path))
    found = "\n".join(caught.value.problems)
    assert "input.tracking_no" in found and "ticket.nmber" in found and ":4:" in found
