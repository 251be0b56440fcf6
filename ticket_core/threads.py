"""Where a message's thread hints lead, for the planner (planner.py).

Threading, first hint that leads somewhere wins (events never join or open a ticket):
`thread.ticket_id`, then `thread.ticket_number` (digits taken from e.g. "#1042"), then
`in_reply_to` and `references` (newest first) against stored Message-IDs, then
`conversation_id` (the latest ticket of that conversation on the same channel that is not
closed or merged), then `join_latest_open` (the customer's latest ticket on the same channel that
is not resolved, closed or merged); otherwise a new ticket. An inbound message appended to a
pending or resolved ticket reopens it (status `open`), unless it is flagged `auto_reply`,
`bounce` or `loop`. A Message-ID leads only to tickets of messages of the same channel and
account.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from intake.message import Message

from .schemas import DONE_STATUSES
from .statements import UNJOINABLE_STATUSES, WriteStatements

RATING_EVENT = "satisfaction"


def normalize_identity(kind: str, value: str) -> str:
    """One spelling per identity: e-mail addresses compare case-insensitively in practice."""
    value = value.strip()
    return value.lower() if kind == "email" else value


def parse_ticket_number(text: str | None) -> int | None:
    """'1042', '#1042' or 'T-1042' (a subject tag) → 1042."""
    if not text:
        return None
    found = re.search(r"\d{1,18}", text)
    return int(found.group()) if found else None


@dataclass(slots=True)
class TicketRef:
    id: str
    number: int | None  # None until the batch's numbers are allocated
    status: str
    customer_id: str
    channel: str
    desk: str | None = None
    new: bool = False


@dataclass(slots=True)
class Known:
    """An identity already owned by a customer (in the database or earlier in the batch)."""

    customer_id: str
    verified: bool
    customer_created_at: datetime


def is_rating(m: Message) -> bool:
    return (m.kind == "event" and m.event is not None and m.event.type == RATING_EVENT
            and m.thread is not None and bool(m.thread.conversation_id))


class ThreadIndex:
    """Where a message's thread hints lead: tickets loaded for the batch plus the ones it adds."""

    def __init__(self) -> None:
        self.by_id: dict[str, TicketRef] = {}
        self.by_number: dict[int, TicketRef] = {}
        # (channel, account, Message-ID): a Message-ID leads only within its own mailbox.
        self.by_message_id: dict[tuple[str, str, str], TicketRef] = {}
        self.by_conversation: dict[tuple[str, str], TicketRef] = {}
        self.latest_open: dict[tuple[str, str], TicketRef] = {}
        # (channel, conversation id) → the ticket a rating lands on, and stored ratings.
        self.rated: dict[tuple[str, str], TicketRef] = {}
        self.satisfaction: dict[str, dict[str, Any] | None] = {}

    @classmethod
    def load(cls, statements: WriteStatements, messages: Sequence[Message],
             known: dict[tuple[str, str], Known]) -> ThreadIndex:
        index = cls()
        hinted = [m.thread for m in messages if m.kind != "event" and m.thread is not None]
        ticket_ids = {t.ticket_id for t in hinted if t.ticket_id}
        numbers = {n for t in hinted if (n := parse_ticket_number(t.ticket_number)) is not None}
        message_ids = {ref for t in hinted for ref in (t.in_reply_to, *t.references) if ref}
        conversations = {t.conversation_id for t in hinted if t.conversation_id}
        joiners = {known[(i.kind, normalize_identity(i.kind, i.value))].customer_id
                   for m in messages if m.kind != "event" and m.thread is not None
                   and m.thread.join_latest_open for i in m.sender.identities
                   if (i.kind, normalize_identity(i.kind, i.value)) in known}
        rated = {m.thread.conversation_id for m in messages
                 if is_rating(m) and m.thread is not None}

        if ticket_ids or numbers:
            for row in statements.tickets_named(sorted(ticket_ids), sorted(numbers)):
                index._add(row)
        if message_ids:
            for *row, channel, account, message_id in statements.tickets_replied_to(
                    sorted(message_ids)):
                # The latest stored copy of a Message-ID wins.
                index.by_message_id[(channel, account, message_id)] = index._add(row)
        if conversations:
            for row in statements.joinable_tickets(sorted(conversations)):
                *_, channel, conversation_id = row
                index.by_conversation[(channel, conversation_id)] = index._add(row)
        if joiners:
            for row in statements.open_tickets(sorted(joiners)):
                ref = index._add(row)
                index.latest_open[(ref.customer_id, ref.channel)] = ref
        if rated:
            for *row, satisfaction in statements.rated_tickets(sorted(c for c in rated if c)):
                ref = index._add(row)
                index.rated[(ref.channel, row[6])] = ref  # oldest first: the latest wins
                index.satisfaction[ref.id] = satisfaction
        return index

    def _add(self, row: Sequence[Any]) -> TicketRef:
        """Index a TicketRow once (several hints may lead to the same ticket)."""
        ticket_id, number, status, customer_id, desk, channel, _conversation_id = row
        ref = self.by_id.get(ticket_id)
        if ref is None:
            ref = TicketRef(id=ticket_id, number=number, status=status,
                            customer_id=customer_id, channel=channel, desk=desk)
            self.by_id[ticket_id] = ref
            self.by_number[number] = ref
        return ref

    def find(self, m: Message, customer_id: str) -> TicketRef | None:
        t = m.thread
        if t is None:
            return None
        if t.ticket_id and t.ticket_id in self.by_id:
            return self.by_id[t.ticket_id]
        number = parse_ticket_number(t.ticket_number)
        if number is not None and number in self.by_number:
            return self.by_number[number]
        for ref in (t.in_reply_to, *reversed(t.references)):
            found = self.by_message_id.get((m.channel, m.account, ref)) if ref else None
            if found is not None:
                return found
        if t.conversation_id:
            found = self.by_conversation.get((m.channel, t.conversation_id))
            if found is not None and found.status not in UNJOINABLE_STATUSES:
                return found
        if t.join_latest_open:
            found = self.latest_open.get((customer_id, m.channel))
            if found is not None and found.status not in DONE_STATUSES:
                return found
        return None

    def remember(self, m: Message, customer_id: str, ticket: TicketRef) -> None:
        """Let later messages of the batch thread onto what this one created or joined."""
        self.by_id[ticket.id] = ticket
        if ticket.number is not None:
            self.by_number[ticket.number] = ticket
        t = m.thread
        if t is not None and t.message_id:
            self.by_message_id[(m.channel, m.account, t.message_id)] = ticket
        if t is not None and t.conversation_id:
            self.by_conversation[(m.channel, t.conversation_id)] = ticket
            if ticket.new or (m.channel, t.conversation_id) not in self.rated:
                self.rated[(m.channel, t.conversation_id)] = ticket
        if ticket.status not in DONE_STATUSES and ticket.channel == m.channel:
            self.latest_open[(customer_id, m.channel)] = ticket
