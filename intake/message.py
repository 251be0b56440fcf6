"""The common message (schema version 1) and the other models that cross the bus."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION: Literal[1] = 1

Channel = Literal["email", "wechat", "webform", "sdk", "telephony", "api"]
Kind = Literal["message", "form_submission", "call", "event"]
IdentityKind = Literal[
    "email",
    "phone",
    "wechat_openid",
    "wechat_unionid",
    "wecom_userid",
    "sdk_user",
    "sdk_device",
    "api_user",
]
Priority = Literal["low", "normal", "high", "urgent"]
Role = Literal["owner", "copy", "primary", "collaborator", "overflow"]
Mode = Literal["single", "multi", "primary_secondary", "split"]

# One vocabulary for every channel; a connector that needs a new flag adds it here.
Flag = Literal[
    "auto_reply",
    "bounce",
    "bulk",
    "loop",
    "spam_suspect",
    "parse_error",
    "oversize",
    "signed",
    "encrypted",
    "attachment_missing",
    "unsupported_type",
    "callback",
    "withheld_number",
    "end_inferred",
    "recording_pending",
    "call_recording",
    "recording_not_fetched",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Strict(BaseModel):
    """Unknown fields are refused, so a typo in a producer fails loudly instead of vanishing."""

    model_config = ConfigDict(extra="forbid", frozen=False, str_strip_whitespace=False)


class Identity(Strict):
    kind: IdentityKind
    value: str = Field(min_length=1, max_length=512)
    verified: bool = False


class Sender(Strict):
    name: str | None = Field(default=None, max_length=512)
    identities: list[Identity] = Field(default_factory=list)


class Thread(Strict):
    """Hints for joining an existing ticket; the ticket core decides."""

    message_id: str | None = Field(default=None, max_length=998)  # RFC 5322 line limit
    in_reply_to: str | None = Field(default=None, max_length=998)
    references: list[str] = Field(default_factory=list)
    subject: str | None = None
    conversation_id: str | None = Field(default=None, max_length=512)
    ticket_number: str | None = None
    ticket_id: str | None = None
    join_latest_open: bool | None = None


class Attachment(Strict):
    filename: str = Field(min_length=1, max_length=1024)
    original_filename: str | None = Field(default=None, max_length=1024)
    content_type: str = Field(default="application/octet-stream", max_length=255)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    blob: str = Field(max_length=128)
    content_id: str | None = Field(default=None, max_length=998)
    inline: bool = False


class CallLeg(Strict):
    """One agent's part of a call (a transfer adds a leg)."""

    agent: str = Field(min_length=1, max_length=200)
    answered_at: datetime | None = None
    ended_at: datetime | None = None


class Call(Strict):
    """A phone call; `state` is a live state on progress messages (`ringing`, `answered`,
    `ended`) and a final one on the record (`completed`, `missed`, `voicemail`, `no_answer`,
    `busy`, `failed`, `cancelled`)."""

    call_id: str = Field(min_length=1, max_length=200)
    line: str | None = None
    adapter: str | None = None
    direction: Literal["inbound", "outbound"] = "inbound"
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    from_ext: str | None = Field(default=None, max_length=32)
    to_ext: str | None = Field(default=None, max_length=32)
    from_raw: str | None = Field(default=None, max_length=512)
    to_raw: str | None = Field(default=None, max_length=512)
    withheld: bool | None = None
    state: str | None = None
    started_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration_s: float | None = None
    talk_s: float | None = None
    wait_s: float | None = None
    agent: str | None = None
    agents: list[str] = Field(default_factory=list)
    legs: list[CallLeg] = Field(default_factory=list)
    queue: str | None = Field(default=None, max_length=200)
    recording_url: str | None = None
    end_reason: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class Form(Strict):
    form_id: str
    fields: dict[str, Any] = Field(default_factory=dict)


class Event(Strict):
    type: str
    key: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class RouteDelivery(Strict):
    desk: str
    skill_group: str | None = None
    role: Role = "owner"
    after: str | None = None  # overflow: the duration after received_at, e.g. "10m"
    due: datetime | None = None  # overflow: received_at + after


class RouteTrial(Strict):
    """One route the router evaluated: did it match, and if not, which condition failed."""

    route: str
    matched: bool
    failed: str | None = None
    saw: dict[str, Any] = Field(default_factory=dict)


class SlaWarning(Strict):
    target: Literal["first_response", "resolution"]
    at: datetime


class Sla(Strict):
    policy: str | None = None
    business_hours: bool = False
    calendar: str | None = None
    first_response_due: datetime | None = None
    resolution_due: datetime | None = None
    warnings: list[SlaWarning] = Field(default_factory=list)


class EscalationStepPlan(Strict):
    id: str
    target: RouteDelivery | None = None
    due: datetime | None = None


class EscalationPlan(Strict):
    """The planned schedule of a timeline (预警投诉): each step due if the one before ends late."""

    timeline: str
    deadline: datetime | None = None
    hard_deadline: datetime | None = None
    steps: list[EscalationStepPlan] = Field(default_factory=list)


class DecisionCustomer(Strict):
    """The customer snapshot the rules read (`customer.*`), as the decision saw it."""

    lookup: Literal["hit", "miss", "timeout", "error", "backoff", "skipped"] = "skipped"
    id: str | None = None
    vip_level: int | None = None
    language: str | None = None
    tickets_count: int | None = None
    open_tickets_count: int | None = None


class RouteDecision(Strict):
    """The router's decision record, stamped on the message it publishes."""

    decision_id: str
    revision: str
    label: str | None = None  # the rules file's own label, shown with the revision
    clock: datetime | None = None  # the received_at the decision was made as of
    customer: DecisionCustomer | None = None
    route: str
    tried: list[RouteTrial] = Field(default_factory=list)
    mode: Mode = "single"
    deliveries: list[RouteDelivery] = Field(min_length=1)
    priority: Priority = "normal"
    category: str | None = None
    tags: list[str] = Field(default_factory=list)
    sla: Sla | None = None
    escalation: EscalationPlan | None = None
    # When an overflow no longer applies: the primary was acknowledged, or got its first reply.
    taken_when: Literal["acknowledged", "first_response"] = "acknowledged"
    explanation: str | None = None


def _require_envelope(schema: dict[str, Any]) -> None:
    # Python producers get these filled in; producers in other languages must send them.
    schema["required"] = ["schema_version", "id", *schema.get("required", [])]


class Message(Strict):
    """The common message every connector publishes to `intake.inbound`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_require_envelope)

    schema_version: Literal[1] = SCHEMA_VERSION
    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    idempotency_key: str = Field(min_length=3, max_length=1024)
    channel: Channel
    account: str = Field(min_length=1, max_length=320)
    kind: Kind
    sender: Sender
    thread: Thread | None = None
    subject: str | None = None
    text: str
    html: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    call: Call | None = None
    form: Form | None = None
    event: Event | None = None
    flags: list[Flag] = Field(default_factory=list)
    channel_data: dict[str, Any] | None = None
    occurred_at: datetime | None = None
    received_at: datetime
    raw: str | None = Field(default=None, max_length=128)
    trace_id: str | None = Field(default=None, max_length=128)
    route: RouteDecision | None = None

    @field_validator("idempotency_key")
    @classmethod
    def key_names_its_channel(cls, value: str) -> str:
        if value.count(":") < 2:
            raise ValueError("must be '<channel>:<account>:<external id>'")
        return value

    @field_validator("received_at", "occurred_at")
    @classmethod
    def aware_utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a time zone (UTC)")
        return value

    @property
    def routing_key(self) -> str:
        return f"{self.channel}.{self.account}"


class OutboundMessage(Strict):
    """An agent reply (or an automatic one) travelling back out through its channel."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_require_envelope)

    schema_version: Literal[1] = SCHEMA_VERSION
    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    idempotency_key: str
    ticket_id: str
    ticket_number: str | None = None
    channel: Channel
    account: str
    to: Identity
    kind: Literal["reply", "auto_reply", "satisfaction_request"] = "reply"
    subject: str | None = None
    text: str
    html: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    thread: Thread | None = None
    created_at: datetime = Field(default_factory=utcnow)
    trace_id: str | None = None


class DeliveryResult(Strict):
    """What a connector reports after trying to deliver an outbound message."""

    schema_version: Literal[1] = SCHEMA_VERSION
    outbound_id: uuid.UUID
    channel: Channel
    account: str
    status: Literal["sent", "delivered", "read", "failed", "window_expired", "suppressed"]
    reason: str | None = None
    provider_message_id: str | None = None
    attempt: int = Field(default=1, ge=1)
    occurred_at: datetime = Field(default_factory=utcnow)


SCHEMAS: dict[str, type[BaseModel]] = {
    "message.v1.json": Message,
    "outbound.v1.json": OutboundMessage,
    "delivery_result.v1.json": DeliveryResult,
}
