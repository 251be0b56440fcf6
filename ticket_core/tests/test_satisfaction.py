"""A `satisfaction` event sets the rated ticket's satisfaction and writes `satisfaction.answered`
in the same transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from intake.message import Event, Identity, Message, Thread
from ticket_core.store import TicketStore

from .builders import message

USER = [Identity(kind="sdk_user", value="demo-app:u-1001", verified=True)]
T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


def chat(key: str, conversation: str = "sdk-t-1") -> Message:
    return message(key, channel="sdk", account="demo-app", kind="message", email=None,
                   identities=USER, thread=Thread(conversation_id=conversation),
                   text="耳机想退货")


def rating(key: str, score: Any, minutes: int, comment: str | None = "很满意",
           conversation: str = "sdk-t-1") -> Message:
    return message(key, channel="sdk", account="demo-app", kind="event", email=None,
                   identities=USER, thread=Thread(conversation_id=conversation),
                   text=comment or "", occurred_at=T0 + timedelta(minutes=minutes),
                   event=Event(type="satisfaction", data={"score": score, "comment": comment}))


async def set_status(store: TicketStore, ticket_id: str, status: str) -> None:
    async with store.engine.begin() as connection:
        await connection.execute(text("UPDATE tickets SET status = :s WHERE id = :id"),
                                 {"s": status, "id": ticket_id})


async def answered(store: TicketStore) -> list[dict[str, Any]]:
    return [dict(row.data, ticket_id=row.ticket_id) for row in await store.events_after(0)
            if row.type == "satisfaction.answered"]


async def test_a_rating_sets_the_tickets_satisfaction_and_writes_the_event(
        store: TicketStore) -> None:
    ticket = await store.persist(chat("c-1"))
    await set_status(store, str(ticket.ticket_id), "resolved")

    result = await store.persist(rating("r-1", 5, 0))

    assert result.ticket_id is None  # an event: on the customer's timeline, on no ticket
    detail = await store.get_ticket(str(ticket.ticket_id))
    assert detail is not None and detail.satisfaction is not None
    assert detail.satisfaction.model_dump() == {
        "score": 5, "comment": "很满意", "via": "sdk", "answered_at": T0,
        "first_answered_at": T0, "request_status": None, "requested_at": None}
    assert detail.status == "resolved"  # a rating reopens nothing
    [event] = await answered(store)
    assert event == {"score": 5, "comment": "很满意", "via": "sdk",
                     "answered_at": T0.isoformat(timespec="microseconds"),
                     "first_answered_at": T0.isoformat(timespec="microseconds"),
                     "previous_score": None, "message_id": result.message_id,
                     "channel": "sdk", "conversation_id": "sdk-t-1",
                     "ticket_number": ticket.ticket_number, "ticket_id": ticket.ticket_id}
    again = await store.persist(rating("r-1", 5, 0))
    assert again.duplicate and len(await answered(store)) == 1


async def test_the_latest_answer_wins_and_the_first_answers_time_stays(
        store: TicketStore) -> None:
    ticket = await store.persist(chat("c-1"))
    await set_status(store, str(ticket.ticket_id), "closed")
    await store.persist(rating("r-1", 2, 0, comment=None))
    await store.persist(rating("r-2", 4, 30, comment="改好了"))
    await store.persist(rating("r-late", 1, 10))  # given before r-2, delivered after it

    detail = await store.get_ticket(str(ticket.ticket_id))
    assert detail is not None and detail.satisfaction is not None
    assert (detail.satisfaction.score, detail.satisfaction.comment) == (4, "改好了")
    assert detail.satisfaction.answered_at == T0 + timedelta(minutes=30)
    assert detail.satisfaction.first_answered_at == T0
    assert [(e["score"], e["previous_score"]) for e in await answered(store)] == [
        (2, None), (4, 2)]
    timeline = await store.customer_timeline(detail.customer_id)
    assert [m.event["data"]["score"] for m in timeline if m.event] == [2, 1, 4]


async def test_a_rating_lands_on_the_conversations_latest_ticket(store: TicketStore) -> None:
    old = await store.persist(chat("c-1"))
    await set_status(store, str(old.ticket_id), "closed")
    follow_up = await store.persist(chat("c-2"))  # the closed one is not joined: a new ticket
    assert follow_up.created_ticket
    await set_status(store, str(follow_up.ticket_id), "merged")
    newest = await store.persist(chat("c-3"))

    await store.persist(rating("r-1", 3, 0))

    rated = [t for t in (await store.list_tickets(limit=10)).items if t.satisfaction]
    assert [t.id for t in rated] == [newest.ticket_id]


async def test_a_rating_of_nothing_known_stays_an_event_only(store: TicketStore) -> None:
    await store.persist(chat("c-1"))

    other_conversation = await store.persist(rating("r-1", 5, 0, conversation="sdk-t-none"))
    bad_scores = [await store.persist(rating(f"r-{score}", score, 1))
                  for score in ("five", 0, 6, True)]

    assert not other_conversation.duplicate and not any(r.duplicate for r in bad_scores)
    assert await answered(store) == []
    assert all(t.satisfaction is None for t in (await store.list_tickets()).items)
