"""Merging (issue 17): tickets into a target ticket, a customer into another, each in one
transaction of the caller's, with its events.

**Tickets.** `merge_tickets` moves the sources' messages (each keeps the number of the ticket it
arrived on in `original_ticket_number`; attachments hang on their messages), internal notes,
tags (the target's first, then the sources' new ones, at most 30) and pending or due reminders
(timers of kind `reminder`: they belong to their agent, so they keep it and follow the
conversation) to the target; every other pending timer of a source (SLA warnings and breaches,
overflow, escalation steps and deadlines, automatic transitions) is cancelled with the reason.
Each source becomes `merged` with `merged_into`, readable as before. Tickets linked to a source
(copies, collaborators) are linked to the target from then on, so they keep showing the
conversation. Later messages threaded to a source land on the target: `threads.ThreadIndex`
follows `merged_into`; hints by Message-ID find the moved messages on the target directly.
The search documents of the target and the sources are rebuilt in the transaction.

Refused, before anything is written: a source that is the target (`MergeIntoSelf`), a source
or target already `merged` (`TicketMerged`), a `closed` target (`TicketClosed`; a closed
source may be merged: its conversation joins a live ticket), another customer's ticket without
`confirm_different_customers` (`CustomersDiffer`), an internal linked ticket on either side
(`NotCustomerFacing`: it shows another ticket's messages and has none to move), a ticket
outside the caller's desks (`TicketNotFound`: 404, never 403) or one the caller may only read
as its first-contact agent (`ReadOnly`).

**Customers.** `merge_customers` moves the source's identities (unique across customers, so an
identity is never held twice), tickets, messages (the customer timeline's events too) and
calls to the target; field values merge with the target's winning (those overwritten are in
the event's `overwritten`), and `name`, `language` and `vip_level` are taken from the source
only where the target has none. The source stays as a tombstone with `merged_into`. Later
messages from a moved identity land on the target: the persist path resolves the sender by
its identities in the write transaction (no cache outlives it on either write path).

**Locks.** The rows are locked in id order (`FOR UPDATE` on PostgreSQL; SQLite's writes open
with `BEGIN IMMEDIATE` and run one at a time) and checked again once locked, so of "A into B"
and "B into A" at the same moment exactly one succeeds; the other finds its ticket merged.

**Events.** `ticket.merged` on each source (`role: source`, `before`/`after` status and
`merged_into`) and one on the target (`role: target`, the sources, what moved, `before`/`after`
tags); `customer.merged` on the source and on the target (`before`/`after` of the target's
name, language, vip_level, fields and identities). A customer merge also writes
`ticket.updated` on each moved ticket (`changes: {customer_id: [source, target]}`), so each
ticket's own history says who it belongs to now.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from .calls import CALLS
from .events import PlannedEvent
from .notes import write_note
from .notifications import notify
from .queries import NOTES
from .replies import TicketNotFound
from .scope import Principal, ticket_access
from .search_index import reindex_connection
from .statements import (
    CUSTOMERS,
    IDENTITIES,
    MESSAGES,
    TICKET_TAGS,
    TICKETS,
    TIMERS,
    CoreWriteStatements,
)
from .store import append_events
from .tags import MAX_TAGS, tag_rows
from .threads import TicketRef
from .timeline import ticket_condition

REMINDER = "reminder"
MAX_SOURCES = 50


class MergeRefused(Exception):
    """A merge the rules refuse; `code` is the API's error."""

    code = "merge_refused"


class MergeIntoSelf(MergeRefused):
    code = "merge_into_self"


class TicketMerged(MergeRefused):
    """A source or the target is merged already (`ticket` names it)."""

    code = "ticket_merged"

    def __init__(self, ticket: str, merged_into: str | None) -> None:
        super().__init__(ticket)
        self.ticket, self.merged_into = ticket, merged_into


class TicketClosed(MergeRefused):
    code = "ticket_closed"


class CustomersDiffer(MergeRefused):
    code = "customers_differ"

    def __init__(self, tickets: list[str]) -> None:
        super().__init__(", ".join(tickets))
        self.tickets = tickets


class NotCustomerFacing(MergeRefused):
    code = "not_customer_facing"


class ReadOnly(MergeRefused):
    """The caller is only the first-contact agent of a source: read and notes, no merge."""

    code = "read_only_access"


class CustomerNotFound(LookupError):
    pass


class CustomerMerged(MergeRefused):
    code = "customer_merged"

    def __init__(self, customer_id: str, merged_into: str) -> None:
        super().__init__(customer_id)
        self.customer_id, self.merged_into = customer_id, merged_into


def _ref(row: Any, status: str | None = None) -> TicketRef:
    return TicketRef(id=row.id, number=row.number, status=status or row.status,
                     customer_id=row.customer_id, channel=row.channel, desk=row.desk)


def _locked_tickets(connection: Connection, refs: Sequence[str]) -> dict[str, Any]:
    """The tickets named by id or number, locked in id order; keyed by the ref given."""
    condition = ticket_condition(refs[0])
    for ref in refs[1:]:
        condition = condition | ticket_condition(ref)
    query = select(TICKETS).where(condition).order_by(TICKETS.c.id)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    rows = connection.execute(query).all()
    found: dict[str, Any] = {}
    for ref in refs:
        for row in rows:
            if ref in (row.id, str(row.number)):
                found[ref] = row
    return found


def merge_tickets(connection: Connection, target_ref: str, source_refs: Sequence[str],
                  note: str | None, confirm_different_customers: bool, now: datetime,
                  principal: Principal) -> str:
    """Merge the sources into the target in the caller's transaction: the target's id."""
    refs = list(dict.fromkeys([target_ref, *source_refs]))
    rows = _locked_tickets(connection, refs)
    for ref in refs:
        if ref not in rows or ticket_access(rows[ref].desk, rows[ref].first_contact_agent_id,
                                            principal) is None:
            raise TicketNotFound(ref)  # out of scope answers as unknown: 404
    target = rows[target_ref]
    sources = list({rows[r].id: rows[r] for r in source_refs}.values())
    if any(s.id == target.id for s in sources):
        raise MergeIntoSelf(target_ref)
    for ref in refs:
        row = rows[ref]
        if ticket_access(row.desk, row.first_contact_agent_id, principal) != "full":
            raise ReadOnly(ref)
        if row.status == "merged":
            raise TicketMerged(ref, row.merged_into)
        if not row.customer_facing or row.primary_ticket_id is not None:
            raise NotCustomerFacing(ref)
    if target.status == "closed":
        raise TicketClosed(target_ref)
    differ = [str(s.number) for s in sources if s.customer_id != target.customer_id]
    if differ and not confirm_different_customers:
        raise CustomersDiffer(differ)

    actor = principal.actor
    source_ids = [s.id for s in sources]
    note_id = write_note(connection, target.id, note, [], actor, now) if note else None
    moved_messages = 0
    for source in sources:  # each message keeps the number of the ticket it arrived on
        moved_messages += connection.execute(update(MESSAGES).where(
            MESSAGES.c.ticket_id == source.id).values(
                ticket_id=target.id, original_ticket_number=func.coalesce(
                    MESSAGES.c.original_ticket_number, source.number))).rowcount
    moved_notes = connection.execute(update(NOTES).where(NOTES.c.ticket_id.in_(source_ids))
                                     .values(ticket_id=target.id)).rowcount
    moved_reminders = connection.execute(update(TIMERS).where(
        TIMERS.c.ticket_id.in_(source_ids), TIMERS.c.kind == REMINDER,
        TIMERS.c.state.in_(("pending", "fired"))).values(ticket_id=target.id)).rowcount
    cancelled = connection.execute(update(TIMERS).where(
        TIMERS.c.ticket_id.in_(source_ids), TIMERS.c.kind != REMINDER,
        TIMERS.c.state == "pending").values(
            state="cancelled", reason=f"ticket merged into {target.number}")).rowcount
    # Copies and collaborators of a source show the conversation: now the target's.
    connection.execute(update(TICKETS).where(TICKETS.c.primary_ticket_id.in_(source_ids))
                       .values(primary_ticket_id=target.id, updated_at=now))

    tags = list(target.tags or [])
    for source in sources:
        tags += [t for t in source.tags or [] if t not in tags]
    tags = tags[:MAX_TAGS]
    if tags != list(target.tags or []):
        connection.execute(TICKET_TAGS.delete().where(TICKET_TAGS.c.ticket_id == target.id))
        connection.execute(TICKET_TAGS.insert(), tag_rows(target.id, tags))
    connection.execute(update(TICKETS).where(TICKETS.c.id == target.id).values(
        tags=tags, updated_at=now, version=TICKETS.c.version + 1))
    connection.execute(update(TICKETS).where(TICKETS.c.id.in_(source_ids)).values(
        status="merged", merged_into=target.id, updated_at=now,
        version=TICKETS.c.version + 1))

    events = [PlannedEvent("ticket.merged", now, _ref(s, "merged"), s.customer_id, actor, {
        "role": "source", "status": "merged", "previous_status": s.status,
        "merged_into": target.id, "target_number": target.number, "note_id": note_id,
        "changes": {"status": [s.status, "merged"], "merged_into": [None, target.id]},
        "before": {"status": s.status, "merged_into": None},
        "after": {"status": "merged", "merged_into": target.id}}) for s in sources]
    events.append(PlannedEvent("ticket.merged", now, _ref(target), target.customer_id, actor, {
        "role": "target", "note_id": note_id,
        "sources": [{"id": s.id, "number": s.number, "status": s.status,
                     "customer_id": s.customer_id} for s in sources],
        "moved": {"messages": moved_messages, "notes": moved_notes,
                  "reminders": moved_reminders},
        "cancelled_timers": cancelled,
        "changes": {"tags": [list(target.tags or []), tags]} if tags != list(
            target.tags or []) else {},
        "before": {"tags": list(target.tags or [])}, "after": {"tags": tags}}))
    # Whoever worked a source hears where its conversation went (not the one who merged).
    told = [a for s in sources for a in (s.assignee_id, s.first_contact_agent_id)
            if a != principal.agent_id]
    notify(connection, told, target.id, "merged", {
        "ticket_number": target.number, "sources": [s.number for s in sources],
        "by": actor}, now)
    reindex_connection(connection, [target.id, *source_ids])
    append_events(CoreWriteStatements(connection), events)
    return str(target.id)


def _identities(connection: Connection, customer_id: str) -> list[dict[str, Any]]:
    return [{"kind": r.kind, "value": r.value, "verified": r.verified}
            for r in connection.execute(select(IDENTITIES).where(
                IDENTITIES.c.customer_id == customer_id).order_by(IDENTITIES.c.id))]


def _profile(row: Any, identities: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": row.name, "language": row.language, "vip_level": row.vip_level,
            "fields": dict(row.fields or {}), "identities": identities}


def _tickets_of(connection: Connection, customer_ids: list[str]) -> list[Any]:
    """These customers' tickets, locked in id order."""
    query = select(TICKETS).where(TICKETS.c.customer_id.in_(customer_ids)).order_by(
        TICKETS.c.id)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    return list(connection.execute(query).all())


def merge_customers(connection: Connection, target_id: str, source_id: str, now: datetime,
                    actor: str) -> str:
    """Merge the source customer into the target in the caller's transaction."""
    if target_id == source_id:
        raise MergeIntoSelf(target_id)
    query = select(CUSTOMERS).where(CUSTOMERS.c.id.in_([target_id, source_id])).order_by(
        CUSTOMERS.c.id)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    rows = {row.id: row for row in connection.execute(query)}
    for customer_id in (target_id, source_id):
        if customer_id not in rows:
            raise CustomerNotFound(customer_id)
        if rows[customer_id].merged_into is not None:
            raise CustomerMerged(customer_id, rows[customer_id].merged_into)
    target, source = rows[target_id], rows[source_id]
    # Customers before tickets, as the persist path (statements `lock_planned`) and a
    # customer's change lock them; both customers' tickets, as their documents are rebuilt.
    _tickets_of(connection, [target_id, source_id])
    before = _profile(target, _identities(connection, target_id))

    values: dict[str, Any] = {}
    if not target.name and source.name:
        values["name"] = source.name
    if not target.language and source.language:
        values["language"] = source.language
    if not target.vip_level and source.vip_level:
        values["vip_level"] = source.vip_level
    target_fields, source_fields = dict(target.fields or {}), dict(source.fields or {})
    fields = {**source_fields, **target_fields}  # the target's values win
    overwritten = {key: value for key, value in source_fields.items()
                   if key in target_fields and target_fields[key] != value}
    if fields != target_fields:
        values["fields"] = fields

    # The unique (kind, value) constraint means the two never share an identity row: moving
    # them keeps each once.
    moved_identities = connection.execute(update(IDENTITIES).where(
        IDENTITIES.c.customer_id == source_id).values(customer_id=target_id)).rowcount
    tickets = _tickets_of(connection, [source_id])  # locked above
    if tickets:
        connection.execute(update(TICKETS).where(TICKETS.c.customer_id == source_id).values(
            customer_id=target_id, updated_at=now, version=TICKETS.c.version + 1))
    moved_messages = connection.execute(update(MESSAGES).where(
        MESSAGES.c.customer_id == source_id).values(customer_id=target_id)).rowcount
    connection.execute(update(CALLS).where(CALLS.c.customer_id == source_id)
                       .values(customer_id=target_id))
    connection.execute(update(CUSTOMERS).where(CUSTOMERS.c.id == target_id).values(
        **values, updated_at=now))
    connection.execute(update(CUSTOMERS).where(CUSTOMERS.c.id == source_id).values(
        merged_into=target_id, updated_at=now))

    after_row = connection.execute(select(CUSTOMERS).where(CUSTOMERS.c.id == target_id)).one()
    after = _profile(after_row, _identities(connection, target_id))
    events = [
        PlannedEvent("customer.merged", now, None, source_id, actor, {
            "role": "source", "merged_into": target_id,
            "before": {"merged_into": None}, "after": {"merged_into": target_id}}),
        PlannedEvent("customer.merged", now, None, target_id, actor, {
            "role": "target", "source_id": source_id,
            "moved": {"identities": moved_identities, "tickets": len(tickets),
                      "messages": moved_messages},
            "overwritten": overwritten, "before": before, "after": after,
            "changes": {key: [before[key], after[key]] for key in before
                        if before[key] != after[key]}}),
        *(PlannedEvent("ticket.updated", now, _ref(t), target_id, actor, {
            "reason": "customer_merged",
            "changes": {"customer_id": [source_id, target_id]}}) for t in tickets),
    ]
    # Their documents hold the customer's name, identities and fields.
    reindex_connection(connection, [], [target_id])
    append_events(CoreWriteStatements(connection), events)
    return target_id


__all__ = ["MAX_SOURCES", "CustomerMerged", "CustomerNotFound", "CustomersDiffer",
           "MergeIntoSelf", "MergeRefused", "NotCustomerFacing", "ReadOnly", "TicketClosed",
           "TicketMerged", "merge_customers", "merge_tickets"]
