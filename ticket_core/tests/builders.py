"""Builders of valid routed messages for the ticket core tests."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from intake.message import (
    Attachment,
    Identity,
    Message,
    RouteDecision,
    RouteDelivery,
    Sender,
    Thread,
    utcnow,
)


def route(desk: str = "aftersales", *, skill_group: str | None = "returns",
          priority: str = "normal", category: str | None = None,
          tags: list[str] | None = None, deliveries: list[RouteDelivery] | None = None
          ) -> RouteDecision:
    return RouteDecision(
        decision_id=uuid.uuid4().hex, revision="0" * 64, route="r1",
        deliveries=deliveries or [RouteDelivery(desk=desk, skill_group=skill_group)],
        priority=priority, category=category, tags=tags or [])  # type: ignore[arg-type]


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
