"""A frame line (`account|external id|email|text`) parsed, then made a Message; no I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from intake import Identity, Message, Sender

from ..errors import FrameMalformed

CHANNEL = "api"


@dataclass(frozen=True)
class Frame:
    account: str
    external_id: str
    email: str
    text: str


def parse_frame(line: bytes) -> Frame:
    try:
        account, external_id, email, text = line.decode("utf-8").rstrip("\r\n").split("|", 3)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameMalformed("a frame is account|external id|email|text") from exc
    if not account or not external_id:
        raise FrameMalformed("a frame names its account and external id")
    return Frame(account, external_id, email, text)


def to_message(frame: Frame, *, message_id: uuid.UUID, received_at: datetime,
               trace_id: str) -> Message:
    identities = [Identity(kind="email", value=frame.email.lower())] if frame.email else []
    return Message(id=message_id, idempotency_key=f"{CHANNEL}:{frame.account}:{frame.external_id}",
                   channel=CHANNEL, account=frame.account, kind="message",
                   sender=Sender(identities=identities), text=frame.text,
                   received_at=received_at, trace_id=trace_id)
