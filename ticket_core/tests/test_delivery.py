"""Delivery results: ranking, recording on the outbound message, unknown outbound ids."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select

from intake.message import DeliveryResult, Thread, utcnow
from ticket_core.delivery import UnknownOutbound, outranks, record_delivery
from ticket_core.replies import ReplyChannels, write_reply
from ticket_core.store import TicketStore
from ticket_core.writes import EVENTS

from .builders import message, route


@pytest.mark.parametrize(("new", "stored", "expected"), [
    (("sent", 1), (None, None), True),
    (("delivered", 1), ("sent", 1), True),
    (("sent", 1), ("read", 1), False),
    (("read", 1), ("delivered", 1), True),
    (("failed", 1), ("read", 1), True),
    (("read", 1), ("failed", 1), False),
    (("sent", 2), ("failed", 1), True),
    (("failed", 1), ("sent", 2), False),
    (("sent", 1), ("sent", 1), False),
])
def test_a_later_attempt_outranks_and_a_final_failure_outranks_within_one(
        new: tuple[str, int], stored: tuple[str | None, int | None], expected: bool) -> None:
    assert outranks(new[0], new[1], stored[0], stored[1]) is expected


async def reply(store: TicketStore) -> str:
    stored = await store.persist(message(channel="email", account="support@example.com",
                                         kind="message", routed=route()))
    assert stored.ticket_id is not None
    ticket_id = stored.ticket_id
    return await store.write(lambda c: write_reply(
        c, ticket_id, "Hello", [], ReplyChannels.parse("email"), utcnow()))


def result(outbound_id: str, status: str, attempt: int = 1,
           reason: str | None = None) -> DeliveryResult:
    return DeliveryResult(outbound_id=uuid.UUID(outbound_id), channel="email",
                          account="support@example.com", status=status,  # type: ignore[arg-type]
                          attempt=attempt, reason=reason)


async def test_results_are_recorded_in_rank_order_whatever_order_they_arrive_in(
        store: TicketStore) -> None:
    outbound_id = await reply(store)
    arrivals = [result(outbound_id, "failed", 1, "mailbox_full"),
                result(outbound_id, "read", 2), result(outbound_id, "sent", 2),
                result(outbound_id, "delivered", 2)]
    changed = [await store.write(lambda c, r=r: record_delivery(c, r, utcnow()))
               for r in arrivals]

    assert changed == [True, True, False, False]
    view = await store.get_message(outbound_id)
    assert view is not None and view.delivery is not None
    assert (view.delivery.status, view.delivery.reason) == ("read", None)
    async with store.engine.connect() as conn:
        updates = (await conn.execute(select(EVENTS.c.data).where(
            EVENTS.c.type == "message.delivery_updated").order_by(EVENTS.c.id))).scalars().all()
    assert [(u["status"], u["previous_status"]) for u in updates] == [
        ("failed", "pending"), ("read", "failed")]


async def test_a_result_for_an_unknown_outbound_id_is_rejected_unknown_outbound(
        store: TicketStore) -> None:
    inbound = await store.persist(message(routed=route()))
    for outbound_id in (str(uuid.uuid4()), inbound.message_id):  # never stored; inbound
        with pytest.raises(UnknownOutbound) as caught:
            await store.write(lambda c, o=outbound_id: record_delivery(
                c, result(o, "sent"), utcnow()))
        assert caught.value.reason == "unknown_outbound"


async def test_results_recorded_concurrently_keep_the_highest_rank(store: TicketStore) -> None:
    for _ in range(5):
        outbound_id = await reply(store)
        arrivals = [result(outbound_id, s) for s in ("sent", "read", "delivered", "sent")]
        await asyncio.gather(*(store.write(lambda c, r=r: record_delivery(c, r, utcnow()))
                               for r in arrivals))
        view = await store.get_message(outbound_id)
        assert view is not None and view.delivery is not None
        assert view.delivery.status == "read"


async def test_a_reply_to_our_sent_message_id_joins_its_ticket(store: TicketStore) -> None:
    outbound_id = await reply(store)
    sent = result(outbound_id, "sent").model_copy(
        update={"provider_message_id": f"<1001.{outbound_id}@example.com>"})
    assert await store.write(lambda c: record_delivery(c, sent, utcnow()))
    view = await store.get_message(outbound_id)
    assert view is not None
    answer = await store.persist(message(
        channel="email", account="support@example.com", kind="message", subject="new subject",
        thread=Thread(in_reply_to=f"<1001.{outbound_id}@example.com>")))
    assert not answer.created_ticket and answer.ticket_id == view.ticket_id
