"""What the agent API returns: tickets, messages, customers, pages and errors, as pydantic models.

The store builds these from rows, the API serialises them, and `openapi.py` derives the
OpenAPI components from the same classes, so the document cannot drift from the answers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from intake.message import Priority

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


class TicketPatch(View):
    """`PATCH /api/v1/tickets/{id}`: the keys given change (at least one)."""

    model_config = ConfigDict(extra="forbid")

    status: Status | None = Field(
        default=None, description="the new status; the same one again changes nothing; one the "
                                  "table does not allow from the ticket's status answers 409 "
                                  "`invalid_transition`")
    category: str | None = Field(default=None, max_length=128,
                                 description="a category id of the config; null clears it")
    priority: Priority | None = Field(
        default=None, description="the new priority; the SLA clocks re-target without "
                                  "forgetting time spent or paused")
    fields: dict[str, Any] | None = Field(
        default=None, description="custom field values by key (`GET /api/v1/fields`); merged "
                                  "into the stored ones, null removes one")
    tags: list[str] | None = Field(default=None, max_length=100,
                                   description="replaces the tags (at most 30)")
    add_tags: list[str] | None = Field(default=None, max_length=100)
    remove_tags: list[str] | None = Field(default=None, max_length=100)


class FieldOptionView(View):
    value: str
    label: str


class FieldDefinitionView(View):
    key: str
    label: str
    type: Literal["text", "textarea", "number", "decimal", "date", "datetime", "select",
                  "multiselect", "checkbox", "email", "phone", "url"]
    required: Literal["on_create", "on_resolve"] | None = None
    options: list[FieldOptionView] | None = None
    pattern: str | None = Field(default=None, description="RE2; the whole value must match")
    min: int | str | None = Field(
        default=None, description="number: a value; decimal: a value as a string; date, "
                                  "datetime: ISO 8601; text: a length; multiselect: a count")
    max: int | str | None = None
    desks: list[str] = Field(default_factory=list, description="empty: every desk")


class FieldsView(View):
    """`GET /api/v1/fields`: the custom fields of the `tickets` config section."""

    ticket_fields: list[FieldDefinitionView]
    customer_fields: list[FieldDefinitionView]


class NoteRequest(View):
    """`POST /api/v1/tickets/{id}/notes`: an internal note."""

    text: str = Field(max_length=100_000, description="the note; not empty")
    mentions: list[str] = Field(default_factory=list, max_length=50,
                                description="agent ids the note mentions")


class NoteView(View):
    """An internal note: agents only, never sent, never shown to the customer."""

    id: str
    ticket_id: str
    text: str
    mentions: list[str] = Field(default_factory=list)
    author: str | None = Field(default=None, description="who wrote it")
    created_at: datetime


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
    route: dict[str, Any] | None = Field(
        default=None, description="inbound: this message's own decision record (a follow-up "
                                  "joining a ticket keeps the ticket where it is)")
    original_ticket_number: int | None = Field(
        default=None, description="the number of the ticket it arrived on, when a merge moved "
                                  "it to this one; null on its own ticket")


class SatisfactionView(View):
    """The customer's latest rating of the ticket (a `satisfaction` event from the channel,
    the rating page of a satisfaction request, or an agent's 回访) and the state of the latest
    satisfaction request; the rating's keys are null until rated."""

    score: int | None = Field(default=None, ge=1, le=5)
    comment: str | None = None
    via: str | None = Field(default=None, description="where the rating came from: the "
                                                      "channel (e.g. `sdk`), `web` (the "
                                                      "rating page), `phone` (an agent)")
    answered_at: datetime | None = Field(default=None,
                                         description="when the latest rating was given, UTC")
    first_answered_at: datetime | None = Field(
        default=None, description="when the ticket was first rated, UTC")
    request_status: Literal["sent", "answered", "expired", "superseded"] | None = Field(
        default=None, description="the latest satisfaction request: `sent` (waiting), "
                                  "`answered` (through its link), `expired` (unanswered in "
                                  "time), `superseded` (a later resolution sent another); "
                                  "null without a request")
    requested_at: datetime | None = Field(default=None,
                                          description="when the latest request was sent, UTC")


class SatisfactionRecord(BaseModel):
    """`POST /api/v1/tickets/{id}/satisfaction`: a rating an agent took down (回访)."""

    model_config = ConfigDict(extra="forbid")

    score: int = Field(ge=1, le=5, strict=True)
    comment: str | None = Field(default=None, max_length=2000)
    via: Literal["phone"] = Field(default="phone", description="how the customer gave it")


class TicketLink(View):
    """Another ticket made for the same message (one ticket per delivery)."""

    ticket_id: str
    number: int
    desk: str | None
    role: str = Field(description="that ticket's delivery role: owner, primary, copy, "
                                  "collaborator")
    relation: Literal["multi", "collaborator"] = Field(
        description="`multi`: a 多服务台 decision's tickets; `collaborator`: a "
                    "primary_secondary decision's collaborator ticket and its primary")


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
    acknowledged_at: datetime | None = Field(
        default=None, description="when the ticket was acknowledged (`POST …/acknowledge`)")
    sla: SlaView | None = Field(default=None, description="the decision's SLA as it runs")
    timers: list[TimerView] = Field(default_factory=list,
                                    description="its timed actions, by due time")
    escalation: EscalationView | None = Field(
        default=None, description="the escalation timeline (预警投诉) as it runs: the actual "
                                  "schedule (the decision carries the planned one)")
    satisfaction: SatisfactionView | None = Field(
        default=None, description="the customer's latest rating; null until rated")
    role: str = Field(default="owner", description="its delivery's role: owner, primary (the "
                                                   "customer-facing ticket), copy, collaborator")
    customer_facing: bool = Field(
        default=True, description="false for a linked internal ticket: replies are refused, "
                                  "it shows the messages of the customer-facing one")
    links: list[TicketLink] = Field(
        default_factory=list, description="the other tickets of the same message (those in "
                                          "the caller's desks)")
    first_contact_agent_id: str | None = Field(
        default=None, description="the first agent assigned to, claiming or replying to it "
                                  "(首问负责人): keeps read and notes access outside its desks")
    assignee_id: str | None = Field(
        default=None, description="the agent holding it; null while it waits in its skill "
                                  "group's queue")
    assigned_at: datetime | None = Field(default=None, description="when it was assigned")
    fields: dict[str, Any] = Field(
        default_factory=dict, description="custom field values by key (decimals as strings); "
        "a value the config no longer accepts shows as `{\"value\": …, \"stale\": true}`")
    version: int = Field(default=1, ge=1, description="raised by every change; send it as "
                                                      "`If-Match` to refuse a stale write")
    reopened_count: int = Field(default=0, ge=0,
                                description="times it went from resolved back to open")
    follow_up_of: str | None = Field(
        default=None, description="the closed ticket a customer's message followed up on")
    merged_into: str | None = Field(
        default=None, description="a merged ticket's target: later messages go there")


SlaTarget = Literal["first_response", "next_response", "resolution"]
TimerKind = Literal["overflow", "sla_warning", "sla_breach", "escalation_step",
                    "escalation_deadline", "auto_resolve", "auto_close",
                    "satisfaction_expiry"]
TimerState = Literal["pending", "fired", "done", "cancelled", "overdue"]


class SlaWarningView(View):
    target: SlaTarget
    cycle: int = Field(default=0, ge=0, description="next_response: the cycle (1 for the "
                                                    "first customer message after the first "
                                                    "reply); 0 for the other targets")
    at: datetime = Field(description="when the warning falls")
    fired_at: datetime | None = Field(default=None, description="when it was given")


class SlaBreachView(View):
    target: SlaTarget
    cycle: int = Field(default=0, ge=0, description="next_response: the cycle")
    at: datetime = Field(description="the due time that passed")


class SlaPauseView(View):
    start: datetime
    end: datetime | None = Field(default=None, description="null: paused now")


class SlaView(View):
    policy: str | None = None
    policy_source: Literal["decision", "category", "desk"] | None = Field(
        default=None, description="where the policy comes from: the router decision, else "
                                  "the category, else the desk")
    business_hours: bool = False
    calendar: str | None = None
    started_at: datetime | None = Field(default=None, description="when the clocks started")
    first_response_due_at: datetime | None = Field(
        default=None, description="null while paused")
    first_response_at: datetime | None = Field(
        default=None, description="the first agent reply: it meets the first-response target")
    next_response_due_at: datetime | None = Field(
        default=None, description="the running cycle's (a customer message no agent reply "
                                  "answered yet); null when none runs or while paused")
    next_response_cycle: int = Field(default=0, ge=0,
                                     description="next-response cycles started so far")
    resolution_due_at: datetime | None = None
    paused: bool = Field(default=False, description="in one of the policy's `pause_on` "
                                                    "statuses: the clocks stand still")
    pauses: list[SlaPauseView] = Field(
        default_factory=list, description="the intervals the clocks stood still (pause_on "
                                          "statuses, resolved)")
    warnings: list[SlaWarningView] = Field(default_factory=list)
    breaches: list[SlaBreachView] = Field(default_factory=list)


class TimerView(View):
    id: int
    kind: TimerKind
    ref: str = Field(description="overflow: the desk; SLA: the target; escalation: "
                                 "`<timeline>.<step>` or `<timeline>.deadline`")
    due_at: datetime
    state: TimerState
    fired_at: datetime | None = None
    reason: str | None = Field(default=None, description="why it was done or cancelled")


class StepTargetView(View):
    desk: str
    skill_group: str | None = None


class EscalationStepView(View):
    id: str
    name: str | None = None
    target: StepTargetView | None = None
    within: str = Field(description="a duration such as 30m")
    done_when: Literal["acknowledged", "first_response", "resolved", "manual"]
    on_overdue: list[Any] = Field(default_factory=list)
    started_at: datetime | None = None
    due_at: datetime | None = None
    completed_at: datetime | None = None
    overdue: bool = False
    by: str | None = Field(default=None, description="who completed it: agent, system, …")
    note: str | None = None
    skipped: bool = Field(default=False, description="not done when the ticket was resolved "
                                                  "(closed, merged): the escalation ended "
                                                  "without it")


class EscalationBreachView(View):
    deadline: Literal["deadline", "hard_deadline"]
    at: datetime


class EscalationView(View):
    id: str = Field(description="for `POST …/escalations/{id}/advance` (the timeline id works "
                                "too)")
    timeline: str
    name: str | None = None
    business_hours: bool = False
    calendar: str | None = None
    step: str | None = Field(description="the current step; null once every step is done")
    step_due_at: datetime | None = None
    deadline_at: datetime | None = None
    hard_deadline_at: datetime | None = None
    completed_at: datetime | None = None
    breaches: list[EscalationBreachView] = Field(default_factory=list)
    steps: list[EscalationStepView]


class AdvanceRequest(View):
    """`POST /api/v1/tickets/{id}/escalations/{escalation_id}/advance`."""

    note: str | None = Field(default=None, max_length=10_000,
                             description="why the step is done; required, not blank")


class DecisionItem(View):
    message_id: str
    ticket_id: str | None
    ticket_number: int | None
    message: dict[str, Any] = Field(description="the common message as the router saw it "
                                                "(without `route`)")
    customer: dict[str, Any] | None = Field(description="the customer snapshot the decision "
                                                        "read (`route.customer`)")
    decision: dict[str, Any]
    persisted_at: datetime


class DecisionPage(View):
    items: list[DecisionItem]
    next: str | None = Field(description="pass as `cursor` for the next page; null at the end")


class CustomerPatch(View):
    """`PATCH /api/v1/customers/{id}`: the keys given change; `fields` merges (a key set to
    null is removed)."""

    name: str | None = Field(default=None, max_length=512)
    vip_level: int | None = Field(default=None, ge=0, le=9)
    language: str | None = Field(default=None, max_length=35,
                                 pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$",
                                 description="a BCP 47 tag such as zh-CN")
    fields: dict[str, Any] | None = Field(
        default=None, description="values by key, checked against `tickets.customer_fields` "
                                  "(free-form where that is not configured)")


class TestClockRequest(View):
    """`POST /api/v1/test-clock`: one of `advance` and `to`."""

    __test__ = False  # not a pytest test class

    advance: str | None = Field(default=None, max_length=64,
                                description="an ISO 8601 duration, e.g. PT30M or P7D")
    to: datetime | None = Field(default=None, description="an ISO 8601 time, not before now")


class TestClockView(View):
    __test__ = False

    now: datetime = Field(description="the domain time")
    fired: int | None = Field(default=None, description="timers fired by this move")


class TicketDetail(TicketView):
    messages: list[MessageView] = Field(description="in source order: occurred_at, received_at")
    notes: list[NoteView] = Field(default_factory=list,
                                  description="internal notes, oldest first; never sent")


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


class CustomerTicketView(View):
    """One of the customer's tickets, as `GET /api/v1/customers/{id}` lists them."""

    id: str
    number: int
    status: Status
    desk: str | None
    channel: str
    subject: str | None
    created_at: datetime


class CustomerView(View):
    id: str
    name: str | None
    identities: list[IdentityView]
    created_at: datetime
    updated_at: datetime
    vip_level: int = Field(default=0, ge=0, le=9)
    language: str | None = Field(default=None, description="BCP 47")
    fields: dict[str, Any] = Field(
        default_factory=dict, description="custom field values by key; a value the config no "
        "longer accepts shows as `{\"value\": …, \"stale\": true}`")
    tickets_count: int = 0
    open_tickets_count: int = Field(default=0, description="not resolved, closed or merged")
    events: list[CustomerEventView] = Field(
        default_factory=list, description="`GET /customers/{id}` only: the customer's events "
        "from the timeline, by `occurred_at`; never on a ticket")
    tickets: list[CustomerTicketView] = Field(
        default_factory=list, description="`GET /customers/{id}` only: the customer's tickets "
        "in the caller's desks, newest first (at most 100)")
    merged_into: str | None = Field(
        default=None, description="merged into this customer (a tombstone: its identities, "
                                  "tickets and field values moved there); null otherwise")


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


# TicketView names the SLA, timer and escalation views defined after it.
TicketView.model_rebuild()
TicketDetail.model_rebuild()
