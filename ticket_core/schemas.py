"""What the agent API returns: tickets, messages, customers, pages and errors, as pydantic models.

The store builds these from rows, the API serialises them, and `openapi.py` derives the
OpenAPI components from the same classes, so the document cannot drift from the answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["new", "open", "pending", "on_hold", "resolved", "closed", "merged"]
STATUSES: tuple[str, ...] = Status.__args__  # type: ignore[attr-defined]
# `status=open` as a filter means "still being worked on": none of these.
DONE_STATUSES: tuple[str, ...] = ("resolved", "closed", "merged")


class View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttachmentView(View):
    filename: str
    original_filename: str | None = None
    content_type: str
    size: int = Field(ge=0, description="bytes")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    blob: str = Field(description="blob store reference, `sha256:<hex>`")
    content_id: str | None = None
    inline: bool = False


DeliveryStatus = Literal["pending", "sent", "delivered", "read", "failed", "window_expired",
                         "suppressed"]


class DeliveryView(View):
    status: DeliveryStatus
    reason: str | None = Field(default=None, description="why it failed, e.g. `no_connector`")


class StatusChange(View):
    """`PATCH /api/v1/tickets/{id}`: the plain status change (no transition rules yet)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["new", "open", "pending", "on_hold", "resolved", "closed"] = Field(
        description="the new status; the same one again changes nothing")


class ReplyRequest(View):
    """`POST /api/v1/tickets/{id}/replies`."""

    text: str = Field(max_length=100_000, description="the reply; not empty")
    attachments: list[str] = Field(
        default_factory=list, max_length=20,
        description="blob references (`sha256:<hex>`) of attachments stored on this gateway")


class MessageView(View):
    id: str
    ticket_id: str | None = Field(description="null for an event (customer timeline only)")
    customer_id: str
    direction: Literal["in", "out"]
    kind: str = Field(description="message, form_submission, call or event (inbound)")
    channel: str
    account: str
    subject: str | None = None
    text: str
    html: str | None = None
    flags: list[str] = Field(default_factory=list)
    attachments: list[AttachmentView] = Field(default_factory=list)
    call: dict[str, Any] | None = Field(
        default=None, description="the call record of a `call` message (message schema v1)")
    form: dict[str, Any] | None = Field(
        default=None, description="`{form_id, fields}` of a form submission")
    event: dict[str, Any] | None = Field(default=None, description="`{type, key, data}`")
    reference: str | None = Field(
        default=None, description="the reference the customer was shown and can quote")
    channel_data: dict[str, Any] | None = Field(
        default=None, description="what the channel adds, e.g. the SDK's `contact` (typed by "
                                  "the customer, unverified: never an identity)")
    sender_name: str | None = None
    occurred_at: datetime | None = Field(description="source time, UTC")
    received_at: datetime = Field(description="gateway time, UTC")
    persisted_at: datetime
    idempotency_key: str
    trace_id: str | None = None
    raw: str | None = Field(default=None, description="blob reference of the untouched payload")
    delivery: DeliveryView | None = Field(
        default=None, description="outbound messages only: the channel's delivery result")


class SatisfactionView(View):
    """The customer's latest rating of the ticket (a `satisfaction` event from the channel)."""

    score: int = Field(ge=1, le=5)
    comment: str | None = None
    via: str = Field(description="the channel the rating came through, e.g. `sdk`")
    answered_at: datetime = Field(description="when the latest rating was given, UTC")
    first_answered_at: datetime = Field(description="when the ticket was first rated, UTC")


class TicketView(View):
    id: str
    number: int = Field(description="human-friendly sequential number, from 1001")
    channel: str
    account: str
    desk: str | None
    skill_group: str | None
    status: Status
    priority: Literal["low", "normal", "high", "urgent"]
    category: str | None
    tags: list[str]
    subject: str | None
    customer_id: str
    conversation_id: str | None = None
    route: dict[str, Any] | None = Field(
        description="the router's decision record (`route` of message schema v1)")
    created_at: datetime
    updated_at: datetime
    satisfaction: SatisfactionView | None = Field(
        default=None, description="the customer's latest rating; null until rated")


class TicketDetail(TicketView):
    messages: list[MessageView] = Field(description="in source order: occurred_at, received_at")


class IdentityView(View):
    kind: str
    value: str
    verified: bool


class CustomerEventView(View):
    """One `kind: event` message on the customer's timeline (a WeChat follow, a menu click)."""

    type: str
    key: str | None = None
    channel: str
    account: str
    occurred_at: datetime | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class CustomerView(View):
    id: str
    name: str | None
    identities: list[IdentityView]
    created_at: datetime
    updated_at: datetime
    events: list[CustomerEventView] = Field(
        default_factory=list, description="`GET /customers/{id}` only: the customer's events "
        "from the timeline, by `occurred_at`; never on a ticket")


class TicketPage(View):
    items: list[TicketView]
    next: str | None = Field(description="pass as `cursor` for the next page; null at the end")


class CustomerPage(View):
    items: list[CustomerView]
    next: str | None = None


class ErrorBody(View):
    error: str = Field(description="stable snake_case code")
    message: str = Field(description="for people")
    fields: dict[str, str] = Field(default_factory=dict,
                                   description="the parameter or field at fault and why")
