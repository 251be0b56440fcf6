"""Small builders of valid messages for tests."""

from __future__ import annotations

import uuid

from intake.message import Identity, Message, Sender, utcnow


def form_message(n: int | str | None = None, *, email: str = "li.wei@example.cn",
                 account: str = "contact", text: str = "我的订单还没有到") -> Message:
    ref = str(n) if n is not None else uuid.uuid4().hex
    return Message(
        idempotency_key=f"webform:{account}:{ref}",
        channel="webform", account=account, kind="form_submission",
        sender=Sender(name="Li Wei", identities=[Identity(kind="email", value=email)]),
        subject=f"Order question {ref}", text=text, received_at=utcnow(),
        trace_id=uuid.uuid4().hex,
    )
