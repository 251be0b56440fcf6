"""Builders of valid routed messages for the ticket core tests."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from intake.message import (
    Attachment,
    EscalationPlan,
    EscalationStepPlan,
    Identity,
    Message,
    RouteDecision,
    RouteDelivery,
    Sender,
    Sla,
    SlaWarning,
    Thread,
    utcnow,
)


def route(desk: str = "aftersales", *, skill_group: str | None = "returns",
          priority: str = "normal", category: str | None = None,
          tags: list[str] | None = None, deliveries: list[RouteDelivery] | None = None,
          sla: Sla | None = None, escalation: EscalationPlan | None = None,
          mode: str = "single") -> RouteDecision:
    return RouteDecision(
        decision_id=uuid.uuid4().hex, revision="0" * 64, route="r1",
        mode=mode,  # type: ignore[arg-type]
        deliveries=deliveries or [RouteDelivery(desk=desk, skill_group=skill_group)],
        priority=priority, category=category, tags=tags or [],  # type: ignore[arg-type]
        sla=sla, escalation=escalation)


def timed_route(received_at: datetime, *, overflow_after: timedelta | None = None,
                first_response: timedelta = timedelta(minutes=30),
                resolution: timedelta = timedelta(hours=2),
                warn_before: timedelta = timedelta(minutes=10),
                steps: list[tuple[str, RouteDelivery | None, timedelta]] | None = None,
                deadline: timedelta | None = timedelta(hours=24),
                hard_deadline: timedelta | None = None,
                timeline: str = "complaint_warning",
                taken_when: str = "acknowledged") -> RouteDecision:
    """A decision as the router plans it: SLA due times and warnings from `received_at`,
    an overflow delivery after `overflow_after`, the escalation schedule of `steps`
    ((id, target, within), each starting when the one before is due)."""
    t0 = received_at
    deliveries = [RouteDelivery(desk="store_sh", skill_group="store_sh_service",
                                role="primary")]
    if overflow_after is not None:
        deliveries.append(RouteDelivery(desk="regional", role="overflow", after="10m",
                                        due=t0 + overflow_after))
    sla = Sla(policy="complaint_simple", first_response_due=t0 + first_response,
              resolution_due=t0 + resolution,
              warnings=[SlaWarning(target="first_response",
                                   at=t0 + first_response - warn_before),
                        SlaWarning(target="resolution", at=t0 + resolution - warn_before)])
    escalation = None
    if steps:
        planned, start = [], t0
        for step_id, target, within in steps:
            start = start + within
            planned.append(EscalationStepPlan(id=step_id, target=target, due=start))
        escalation = EscalationPlan(
            timeline=timeline, deadline=t0 + deadline if deadline else None,
            hard_deadline=t0 + hard_deadline if hard_deadline else None, steps=planned)
    return RouteDecision(
        decision_id=uuid.uuid4().hex, revision="0" * 64, route="store_complaint",
        mode="primary_secondary" if overflow_after is not None else "single",
        deliveries=deliveries, priority="high", category="complaint", tags=["complaint"],
        sla=sla, escalation=escalation, taken_when=taken_when)  # type: ignore[arg-type]


def message(key: str | None = None, *, channel: str = "webform", account: str = "contact",
            kind: str = "form_submission", email: str | None = "li.wei@example.cn",
            identities: list[Identity] | None = None, name: str | None = "Li Wei",
            subject: str | None = "Where is my order?", text: str = "我的订单还没有到",
            thread: Thread | None = None, routed: RouteDecision | None = None,
            occurred_at: datetime | None = None, received_at: datetime | None = None,
            attachments: list[Attachment] | None = None, **extra: Any) -> Message:
    """A valid message; `email=None` and no `identities` gives an anonymous sender."""
    if identities is None:
        identities = [Identity(kind="email", value=email)] if email else []
    return Message(
        idempotency_key=f"{channel}:{account}:{key or uuid.uuid4().hex}",
        channel=channel, account=account, kind=kind,  # type: ignore[arg-type]
        sender=Sender(name=name, identities=identities), subject=subject, text=text,
        thread=thread, route=routed, occurred_at=occurred_at,
        received_at=received_at or utcnow(), attachments=attachments or [],
        trace_id=uuid.uuid4().hex, **extra)
