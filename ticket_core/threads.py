"""Where a message's thread hints lead, for the planner (planner.py).

Threading, first hint that leads somewhere wins (events never join or open a ticket):
`thread.ticket_id`, then `thread.ticket_number` (digits taken from e.g. "#1042"), then
`in_reply_to` and `references` (newest first) against stored Message-IDs, then
`conversation_id` (the latest ticket of that conversation on the same channel that is not
closed or merged; when every one is, the latest of them), then `join_latest_open` (the
customer's latest ticket on the same channel that is not resolved, closed or merged);
otherwise a new ticket. A Message-ID leads only to tickets of messages of the same channel and
account.

Where a hint leads to a dead end (`lead`, issue 17): a `merged` ticket hands the message to its
`merged_into` target (followed up to `MAX_HOPS` merges); a `closed` ticket is never appended
to: the message joins the closed ticket's follow-up that is still open, else makes a new
follow-up ticket (`follow_up_of`, inheriting desk, skill group, category and tags, as Zendesk
does). Status rules for the ticket joined (reopening) are in planner.py.
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
# Merges followed from a merged ticket to its target (a target merged on again, …).
MAX_HOPS = 5


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
    reopened: int = 0  # resolved → open in this batch (reopened_count)


@dataclass(frozen=True, slots=True)
class Lineage:
    """What a closed or merged ticket passes on: a follow-up's inheritance, a merge target."""

    skill_group: str | None
    category: str | None
    tags: list[str]
    merged_into: str | None


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
        # The latest ticket of a conversation whose every ticket is closed or merged.
        self.ended_conversation: dict[tuple[str, str], TicketRef] = {}
        # Closed and merged tickets' inheritance and targets; a closed ticket's open follow-up.
        self.lineage: dict[str, Lineage] = {}
        self.follow_up: dict[str, TicketRef] = {}
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
            for row in statements.conversation_tickets(sorted(conversations)):
                *_, channel, conversation_id = row
                ref = index._add(row)
                key = (channel, conversation_id)
                if ref.status in UNJOINABLE_STATUSES:
                    index.ended_conversation[key] = ref
                else:
                    index.by_conversation[key] = ref
        if joiners:
            for row in statements.open_tickets(sorted(joiners)):
                ref = index._add(row)
                index.latest_open[(ref.customer_id, ref.channel)] = ref
        if rated:
            for *row, satisfaction in statements.rated_tickets(sorted(c for c in rated if c)):
                ref = index._add(row)
                index.rated[(ref.channel, row[6])] = ref  # oldest first: the latest wins
                index.satisfaction[ref.id] = satisfaction
        index._load_lineage(statements)
        return index

    def _load_lineage(self, statements: WriteStatements) -> None:
        """Closed and merged tickets the hints reached: their inheritance, open follow-ups
        and merge targets (hop by hop: a target may be merged or closed in turn)."""
        wanted = {r.id for r in self.by_id.values() if r.status in UNJOINABLE_STATUSES}
        for _ in range(MAX_HOPS):
            wanted -= self.lineage.keys()
            if not wanted:
                return
            targets: set[str] = set()
            for row in statements.ticket_lineage(sorted(wanted)):
                ref = self._add(row[:7])
                skill_group, category, tags, merged_into, follow_up_of = row[7:]
                if follow_up_of in wanted and ref.id not in wanted:
                    self.follow_up[follow_up_of] = ref  # oldest first: the latest wins
                    continue
                self.lineage[ref.id] = Lineage(skill_group, category, list(tags or []),
                                               merged_into)
                if ref.status == "merged" and merged_into and merged_into not in self.by_id:
                    targets.add(merged_into)
                elif ref.status == "merged" and merged_into:
                    target = self.by_id[merged_into]
                    if target.status in UNJOINABLE_STATUSES:
                        targets.add(merged_into)
            wanted = targets | {r.id for r in self.by_id.values()
                                if r.status in UNJOINABLE_STATUSES}

    def lead(self, found: TicketRef | None) -> tuple[TicketRef | None, TicketRef | None]:
        """Where a message whose hints found `found` goes: (the ticket to join, or None for a
        new one; the closed ticket a new one follows up, or None)."""
        ref = found
        for _ in range(MAX_HOPS):
            if ref is None or ref.status != "merged":
                break
            lineage = self.lineage.get(ref.id)
            target = self.by_id.get(lineage.merged_into) if (
                lineage and lineage.merged_into) else None
            if target is None:
                return None, None  # a merged ticket without a known target: a new ticket
            ref = target
        if ref is None or ref.status == "merged":
            return None, None
        if ref.status == "closed":
            follow_up = self.follow_up.get(ref.id)
            if follow_up is not None and follow_up.status not in UNJOINABLE_STATUSES:
                return follow_up, None
            return None, ref
        return ref, None

    def followed_up(self, closed: TicketRef, follow_up: TicketRef) -> None:
        """A follow-up made in this batch: later messages to `closed` join it."""
        self.follow_up[closed.id] = follow_up

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
            key = (m.channel, t.conversation_id)
            found = self.by_conversation.get(key)
            if found is not None and found.status not in UNJOINABLE_STATUSES:
                return found
            if found is None and key in self.ended_conversation:
                return self.ended_conversation[key]  # closed or merged: see `lead`
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
