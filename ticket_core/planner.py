"""The pure planner: what a batch of routed messages becomes (customers, tickets, rows, events).

A batch is planned in memory, message by message, against what the load step found (known
idempotency keys, identities, thread targets), so a later message of the batch sees the
customers and tickets an earlier one created. No statement is run here but the loads through
`WriteStatements`; the store writes the plan (store.py).

Threading: the hints and their order are in threads.py.

Ratings: a `satisfaction` event (`event.data: {score, comment}`, `thread.conversation_id`) stays
on the customer's timeline like any event, and sets the satisfaction of the latest ticket of that
conversation on its channel (not merged): the latest answer wins (by `occurred_at`, else
`received_at`), the first answer's time is kept, and `satisfaction.answered` is written.

Identities: e-mail addresses are stored lower-cased. The sender's customer is the oldest one
owning any of the message's identities; the others are added to it unless another customer owns
them already (never taken away); a verified identity upgrades a stored unverified one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from intake.message import Message, utcnow

from .events import PlannedEvent
from .links import linked_deliveries, linked_ticket_row
from .sla import message_timer
from .statements import WriteStatements
from .tags import lenient_tags, tag_rows
from .threads import (
    Known,
    Lineage,
    ThreadIndex,
    TicketRef,
    is_rating,
    normalize_identity,
    parse_ticket_number,
)
from .timers import Timelines, plan_timing

__all__ = [
    "Known",
    "PersistResult",
    "Plan",
    "ThreadIndex",
    "TicketRef",
    "finish_results",
    "normalize_identity",
    "parse_ticket_number",
    "plan_batch",
]

# An inbound message on a ticket waiting for the customer or a third party, or already
# solved, puts it back to `open` (from resolved: a reopen, counted in `reopened_count`);
# unless a machine sent it (an out-of-office, a bounce, our own mail come back).
REOPENED_BY_CUSTOMER = ("pending", "on_hold", "resolved")
NEVER_REOPENS = frozenset({"auto_reply", "bounce", "loop"})
OWNING_ROLES = ("owner", "primary")


@dataclass(frozen=True, slots=True)
class PersistResult:
    ticket_id: str | None  # None for an event
    ticket_number: int | None
    message_id: str
    customer_id: str
    created_ticket: bool
    duplicate: bool


@dataclass(slots=True)
class Plan:
    results: list[PersistResult | None] = field(default_factory=list)
    customers: list[dict[str, Any]] = field(default_factory=list)
    identities_new: list[dict[str, Any]] = field(default_factory=list)  # of new customers
    identities_added: list[dict[str, Any]] = field(default_factory=list)  # to found customers
    verify: set[tuple[str, str]] = field(default_factory=set)
    tickets: list[dict[str, Any]] = field(default_factory=list)
    new_ticket_refs: list[TicketRef] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    touched: dict[str, TicketRef] = field(default_factory=dict)
    satisfaction: dict[str, dict[str, Any]] = field(default_factory=dict)  # by ticket id
    events: list[PlannedEvent] = field(default_factory=list)
    timers: list[dict[str, Any]] = field(default_factory=list)  # of new tickets (timers.py)
    ticket_tags: list[dict[str, Any]] = field(default_factory=list)  # of new tickets (tags.py)
    # Tickets a customer's message took out of pending, on_hold or resolved: their automatic
    # transitions (lifecycle.py) are cancelled.
    woken: set[str] = field(default_factory=set)
    # (result slot, ticket, message id, customer id, created): results once numbers exist.
    pending: list[tuple[int, TicketRef | None, str, str, bool]] = field(default_factory=list)
    # The first slot of each idempotency key: a repeat within the batch copies its result.
    batch_first: dict[str, int] = field(default_factory=dict)


def plan_batch(statements: WriteStatements, messages: Sequence[Message],
               now: datetime, timelines: Timelines | None = None) -> Plan:
    """Load what the batch needs, then plan it message by message."""
    plan = Plan(results=[None] * len(messages))
    timelines = timelines if timelines is not None else Timelines()

    # 1. Load: which keys are stored already (and which message ids are taken).
    keys = {m.idempotency_key for m in messages}
    ids = {str(m.id) for m in messages}
    stored: dict[str, PersistResult] = {}
    taken_ids: set[str] = set()
    rows = statements.stored_messages(sorted(keys), sorted(ids))
    for message_id, key, ticket_id, customer_id, ticket_number in rows:
        taken_ids.add(message_id)
        if key in stored or key not in keys:
            continue
        stored[key] = PersistResult(
            ticket_id=ticket_id, ticket_number=ticket_number, message_id=message_id,
            customer_id=customer_id, created_ticket=False, duplicate=True)

    fresh: list[Message] = []
    seen: set[str] = set()
    for m in messages:
        if m.idempotency_key not in stored and m.idempotency_key not in seen:
            seen.add(m.idempotency_key)
            fresh.append(m)

    known = _load_identities(statements, fresh)
    threads = ThreadIndex.load(statements, fresh, known)

    # 2. Plan, message by message.
    for index, m in enumerate(messages):
        key = m.idempotency_key
        if key in stored:
            plan.results[index] = stored[key]
            continue
        if key in plan.batch_first:
            continue  # filled in after allocation from the first occurrence
        plan.batch_first[key] = index
        planned = len(plan.events)
        _plan_message(plan, index, m, now, known, threads, taken_ids, timelines)
        for event in plan.events[planned:]:  # the history's trace of each change (history.py)
            event.trace_id = m.trace_id
    return plan


def finish_results(plan: Plan, messages: Sequence[Message]) -> list[PersistResult]:
    """The results in the order of `messages`, once the plan is written (numbers allocated)."""
    for index, ref, message_id, customer_id, created in plan.pending:
        plan.results[index] = PersistResult(
            ticket_id=ref.id if ref else None, ticket_number=ref.number if ref else None,
            message_id=message_id, customer_id=customer_id, created_ticket=created,
            duplicate=False)
    for index, m in enumerate(messages):
        if plan.results[index] is None:
            first = plan.results[plan.batch_first[m.idempotency_key]]
            assert first is not None
            plan.results[index] = PersistResult(
                ticket_id=first.ticket_id, ticket_number=first.ticket_number,
                message_id=first.message_id, customer_id=first.customer_id,
                created_ticket=False, duplicate=True)
    return [r for r in plan.results if r is not None]


def _load_identities(statements: WriteStatements,
                     messages: Iterable[Message]) -> dict[tuple[str, str], Known]:
    pairs = {(i.kind, normalize_identity(i.kind, i.value))
             for m in messages for i in m.sender.identities}
    if not pairs:
        return {}
    return {(kind, value): Known(customer_id, verified, created_at)
            for kind, value, customer_id, verified, created_at
            in statements.known_identities(sorted(pairs))}


def _plan_message(plan: Plan, index: int, m: Message, now: datetime,
                  known: dict[tuple[str, str], Known], threads: ThreadIndex,
                  taken_ids: set[str], timelines: Timelines) -> None:
    # The customer: the oldest one owning any of the sender's identities, else a new one.
    claims: dict[tuple[str, str], bool] = {}
    for identity in m.sender.identities:
        pair = (identity.kind, normalize_identity(identity.kind, identity.value))
        claims[pair] = claims.get(pair, False) or identity.verified
    owners = [known[pair] for pair in claims if pair in known]
    if owners:
        owner = min(owners, key=lambda k: (k.customer_created_at, k.customer_id))
        customer_id, customer_created_at, target = (
            owner.customer_id, owner.customer_created_at, plan.identities_added)
    else:
        customer_id, customer_created_at, target = (
            str(uuid.uuid4()), now, plan.identities_new)
        plan.customers.append({"id": customer_id, "name": m.sender.name,
                               "created_at": customer_created_at, "updated_at": now,
                               "vip_level": 0, "language": None, "fields": None})
    for pair, verified in claims.items():
        existing = known.get(pair)
        if existing is None:
            # Only identities nobody owns are added: an identity is never taken away.
            target.append({"customer_id": customer_id, "kind": pair[0], "value": pair[1],
                           "verified": verified, "created_at": now})
            known[pair] = Known(customer_id, verified, customer_created_at)
        elif verified and not existing.verified:
            plan.verify.add(pair)
            existing.verified = True

    # The ticket: one the thread hints name, else a new one. Events never open one.
    ticket: TicketRef | None = None
    created = False
    if m.kind != "event":
        # A closed ticket is followed up, a merged one's target takes the message (threads.py).
        ticket, closed = threads.lead(threads.find(m, customer_id))
        if ticket is None:
            ticket = _plan_ticket(plan, m, customer_id, now, timelines,
                                  follow_up=(closed, threads.lineage.get(closed.id))
                                  if closed is not None else None)
            created = True
            if closed is not None:
                threads.followed_up(closed, ticket)
        else:
            reopened_from = None
            if ticket.status in REOPENED_BY_CUSTOMER and not NEVER_REOPENS.intersection(m.flags):
                reopened_from = ticket.status
                reopen = ticket.status == "resolved"
                plan.events.append(PlannedEvent(
                    "ticket.updated", now, ticket, customer_id, "customer",
                    {"status": "open", "previous_status": ticket.status,
                     "changes": {"status": [ticket.status, "open"]}, "reopened": reopen}))
                ticket.reopened += reopen
                ticket.status = "open"
                plan.woken.add(ticket.id)
            if not ticket.new and not NEVER_REOPENS.intersection(m.flags):
                # The SLA clocks count it when the scheduler applies this (sla.py).
                plan.timers.append(message_timer(ticket.id, str(m.id), m.received_at, now,
                                                 reopened_from))
            if not ticket.new:
                plan.touched[ticket.id] = ticket
        threads.remember(m, customer_id, ticket)

    message_id = str(m.id)
    if message_id in taken_ids:
        message_id = str(uuid.uuid4())  # the producer reused an id for another key
    taken_ids.add(message_id)
    channel_data = m.channel_data or None
    reference = channel_data.get("reference") if channel_data else None
    thread = m.thread
    plan.messages.append({
        "id": message_id,
        "ticket_id": ticket.id if ticket else None,
        "customer_id": customer_id,
        "direction": "in",
        "kind": m.kind,
        "channel": m.channel,
        "account": m.account,
        "subject": m.subject,
        "text": m.text,
        "html": m.html,
        "flags": list(m.flags),
        "form": m.form.model_dump(mode="json") if m.form else None,
        "call": m.call.model_dump(mode="json", by_alias=True) if m.call else None,
        "event": m.event.model_dump(mode="json") if m.event else None,
        "channel_data": channel_data,
        "thread": thread.model_dump(mode="json", exclude_defaults=True) if thread else None,
        "idempotency_key": m.idempotency_key,
        "message_id": thread.message_id if thread else None,
        "reference": str(reference)[:128] if reference is not None else None,
        "occurred_at": m.occurred_at,
        "received_at": m.received_at,
        "persisted_at": now,
        "raw": m.raw,
        "trace_id": m.trace_id,
        "sender_name": m.sender.name,
        # Every column, so the fast path's insert takes its quick branch (see writes.py).
        "delivery_status": None,
        "delivery_reason": None,
        "delivery_attempt": None,
        "route": m.route.model_dump(mode="json") if m.route else None,
        "sender": m.sender.model_dump(mode="json"),
    })
    for a in m.attachments:
        plan.attachments.append({
            "message_id": message_id, "filename": a.filename,
            "original_filename": a.original_filename, "content_type": a.content_type,
            "size": a.size, "sha256": a.sha256, "blob": a.blob,
            "content_id": a.content_id, "inline": a.inline})
    plan.events.append(PlannedEvent(
        "message.created", now, ticket, customer_id, "customer",
        {"message_id": message_id, "direction": "in", "kind": m.kind, "channel": m.channel,
         "account": m.account}))
    if is_rating(m):
        _plan_rating(plan, m, customer_id, message_id, now, threads)
    plan.pending.append((index, ticket, message_id, customer_id, created))


def _plan_rating(plan: Plan, m: Message, customer_id: str, message_id: str, now: datetime,
                 threads: ThreadIndex) -> None:
    """Set the rated ticket's satisfaction, unless a later answer is stored already."""
    assert m.event is not None and m.thread is not None
    ticket = threads.rated.get((m.channel, m.thread.conversation_id or ""))
    score = m.event.data.get("score")
    if (ticket is None or not isinstance(score, int) or isinstance(score, bool)
            or not 1 <= score <= 5):
        return  # nothing to rate, or not a rating the agent API can show
    comment = m.event.data.get("comment")
    answered_at = (m.occurred_at or m.received_at).astimezone(UTC).isoformat(
        timespec="microseconds")  # the same width always, so text order is time order
    previous = threads.satisfaction.get(ticket.id)
    if previous is not None and str(previous.get("answered_at", "")) > answered_at:
        return  # an older answer delivered late
    satisfaction = {  # the latest request's state stays (satisfaction.py)
        **(previous or {}), "score": score,
        "comment": comment if isinstance(comment, str) else None,
        "via": m.channel, "answered_at": answered_at,
        "first_answered_at": (previous or {}).get("first_answered_at") or answered_at}
    plan.satisfaction[ticket.id] = threads.satisfaction[ticket.id] = satisfaction
    if not ticket.new:
        plan.touched[ticket.id] = ticket
    plan.events.append(PlannedEvent(
        "satisfaction.answered", now, ticket, customer_id, "customer",
        {**satisfaction, "message_id": message_id, "channel": m.channel,
         "conversation_id": m.thread.conversation_id,
         "previous_score": previous.get("score") if previous else None},
        before={"satisfaction": _shown(previous)}, after={"satisfaction": _shown(satisfaction)}))


def _shown(satisfaction: dict[str, Any] | None) -> dict[str, Any] | None:
    """A satisfaction as the history shows it: the answer, not its bookkeeping."""
    if satisfaction is None:
        return None
    return {key: satisfaction.get(key) for key in ("score", "comment", "via", "answered_at")}


def _plan_ticket(plan: Plan, m: Message, customer_id: str, now: datetime,
                 timelines: Timelines,
                 follow_up: tuple[TicketRef, Lineage | None] | None = None) -> TicketRef:
    route = m.route
    desk = skill_group = category = None
    priority = "normal"
    tags: list[str] = []
    owner = None
    if route is not None:
        owner = next((d for d in route.deliveries if d.role in OWNING_ROLES),
                     route.deliveries[0])
        desk, skill_group = owner.desk, owner.skill_group
        priority, category, tags = route.priority, route.category, lenient_tags(route.tags)
    if follow_up is not None:
        # Zendesk's rule: a follow-up stays where its closed ticket was, as it was filed.
        # TODO(issue 17): custom fields and the assignee, once tickets have them.
        closed, lineage = follow_up
        desk = closed.desk
        if lineage is not None:
            skill_group, category, tags = lineage.skill_group, lineage.category, lineage.tags
    subject = m.subject or (m.thread.subject if m.thread else None) or _first_line(m.text)
    # Each ticket its own instant, so newest-first lists keep a batch in arrival order.
    created_at = utcnow()
    ticket_id = str(uuid.uuid4())
    timing = plan_timing(ticket_id, route, m.received_at, now, timelines, desk=desk,
                         category=category, priority=priority)
    if timing.target is not None:  # the escalation's first step moves it when it starts
        desk, skill_group = timing.target["desk"], timing.target["skill_group"]
    ref = TicketRef(id=ticket_id, number=None, status="new",
                    customer_id=customer_id, channel=m.channel, desk=desk, new=True)
    row = {
        "id": ref.id, "number": None, "channel": m.channel, "account": m.account,
        "desk": desk, "skill_group": skill_group, "status": "new", "priority": priority,
        "category": category, "tags": tags, "subject": subject,
        "customer_id": customer_id,
        "route": route.model_dump(mode="json") if route else None,
        "conversation_id": m.thread.conversation_id if m.thread else None,
        "created_at": created_at, "updated_at": created_at, "satisfaction": None,
        "acknowledged_at": None, "sla": timing.sla, "escalation": timing.escalation,
        "role": owner.role if owner is not None else "owner", "customer_facing": True,
        "primary_ticket_id": None, "link_relation": None, "fields": None,
        "version": 1, "reopened_count": 0,
        "follow_up_of": follow_up[0].id if follow_up is not None else None,
        "merged_into": None,
    }
    plan.tickets.append(row)
    plan.ticket_tags.extend(tag_rows(ticket_id, tags))
    plan.new_ticket_refs.append(ref)
    plan.timers.extend(timing.timers)
    created = {"channel": m.channel, "account": m.account, "status": "new",
               "priority": priority, "subject": subject, "category": category,
               "conversation_id": m.thread.conversation_id if m.thread else None}
    plan.events.append(PlannedEvent(
        "ticket.created", now, ref, customer_id, "customer",
        {**created, "skill_group": skill_group, "role": row["role"],
         **({"follow_up_of": row["follow_up_of"]} if follow_up is not None else {})}))
    for delivery in linked_deliveries(route, owner):
        assert route is not None
        linked = linked_ticket_row(row, delivery, route.mode, str(uuid.uuid4()), utcnow())
        linked_ref = TicketRef(id=linked["id"], number=None, status="new",
                               customer_id=customer_id, channel=m.channel,
                               desk=delivery.desk, new=True)
        plan.tickets.append(linked)
        plan.ticket_tags.extend(tag_rows(linked["id"], tags))
        plan.new_ticket_refs.append(linked_ref)
        plan.events.append(PlannedEvent(
            "ticket.created", now, linked_ref, customer_id, "customer",
            {**created, "skill_group": delivery.skill_group, "role": delivery.role,
             "customer_facing": False, "primary_ticket_id": ref.id,
             "relation": linked["link_relation"]}))
    escalation = timing.escalation
    if escalation is not None:
        first = escalation["steps"][0]
        plan.events.append(PlannedEvent(
            "escalation.step_started", now, ref, customer_id, "system",
            {"escalation_id": escalation["id"], "timeline": escalation["timeline"],
             "step": first["id"], "name": first["name"], "target": first["target"],
             "due_at": first["due_at"]}, by="system:router"))
    return ref


def _first_line(text: str, limit: int = 200) -> str | None:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:limit]
    return None
