"""The routing sections of the config as models (the checks between them: `check.py`)."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from intake.calendars import CalendarSpec
from intake.config import ConfigPattern
from intake.durations import Duration, Percent
from intake.message import Channel, Kind, Priority, Role

DEFAULT_ROUTE_ID = "default"

CHANNELS: tuple[str, ...] = typing.get_args(Channel)
OPERATORS = ("equals", "not_equals", "in", "contains", "matches", "exists", "gt", "lt")
# Ids end up in routing keys (`intake.routed` is a topic exchange keyed by desk): no dots,
# no wildcards, no spaces.
ID_PATTERN = r"^[A-Za-z0-9_-]+$"
RouteMode = Literal["single", "multi", "primary_secondary", "split"]
Strategy = Literal["round_robin", "least_loaded", "claim"]
MODE_ROLES: dict[str, tuple[Role, Role, frozenset[str]]] = {
    # mode: (the owning role, the default role of the others, roles allowed)
    "multi": ("owner", "copy", frozenset({"owner", "copy", "collaborator"})),
    "primary_secondary": ("primary", "collaborator",
                          frozenset({"primary", "collaborator", "overflow"})),
    # split: one delivery is picked by weight; it is the owner.
    "split": ("owner", "owner", frozenset({"owner"})),
}
LEAD_ROLE = {"single": "owner", "multi": "owner", "primary_secondary": "primary",
             "split": "owner"}

Loc = tuple[str | int, ...]


def _none_as_list(value: Any) -> Any:
    # `routes:` with nothing under it is YAML null; read it as an empty section.
    return [] if value is None else value


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Id = Annotated[str, Field(min_length=1, max_length=100, pattern=ID_PATTERN)]
Section = BeforeValidator(_none_as_list)
OneOrMany = BeforeValidator(_one_or_many)


class RulesModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _reply_address(value: str) -> str:
    from intake.fields import clean_email

    return clean_email(value)


class ReplyFrom(RulesModel):
    """Where a desk's mail to customers comes from (a channel that cannot reply, e.g. the web
    form, answers by mail from here)."""

    email: Annotated[str, AfterValidator(_reply_address)]


class Desk(RulesModel):
    id: Id
    name: str = Field(min_length=1)
    # Its tickets' default for SLA arithmetic; routing modes belong to routes (v1's desk
    # `mode` is gone).
    calendar: str | None = None
    default_skill_group: str | None = None
    # The agent workflow: the policy of its tickets when neither the decision nor the
    # category names one; the sender of its mail.
    sla_policy: str | None = None
    reply_from: ReplyFrom | None = None


class SkillGroup(RulesModel):
    id: Id
    desk: str
    name: str | None = None
    skills: list[str] = Field(default_factory=list)
    # Read by the agent workflow, which assigns agents; the router validates and shows them.
    strategy: Strategy = "round_robin"
    capacity: dict[Channel, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)


class Category(RulesModel):
    id: Id
    name: str = Field(min_length=1)
    sla_policy: str | None = None  # before the desk's, after the decision's


class SlaTargets(RulesModel):
    """The targets of one priority (`targets: {urgent: {...}}`)."""

    first_response: Duration | None = None
    next_response: Duration | None = None
    resolution: Duration | None = None


# Statuses that may stop a policy's clocks (the done ones stop them anyway).
PauseStatus = Literal["new", "open", "pending", "on_hold"]


class SlaPolicy(RulesModel):
    id: Id
    name: str | None = None
    business_hours: bool = False
    calendar: str | None = None  # default: the owning desk's
    first_response: Duration | None = None
    next_response: Duration | None = None
    resolution: Duration | None = None
    warn_before: Duration | None = None
    warn_at: Percent | None = None
    pause_on: list[PauseStatus] = Field(default_factory=lambda: list[PauseStatus](["pending"]))
    # Per priority; the flat targets above apply to a priority not listed here.
    targets: dict[Priority, SlaTargets] = Field(default_factory=dict)

    @model_validator(mode="after")
    def one_warning_rule(self) -> SlaPolicy:
        if self.warn_before is not None and self.warn_at is not None:
            raise ValueError("give warn_before or warn_at, not both")
        return self

    def targets_for(self, priority: str | None) -> SlaTargets:
        """The targets of `priority`: its own entry, each target unset there taken from the
        flat ones."""
        own = next((t for p, t in self.targets.items() if p == priority), None)
        flat = SlaTargets(first_response=self.first_response,
                          next_response=self.next_response, resolution=self.resolution)
        if own is None:
            return flat
        return SlaTargets(**{name: getattr(own, name) if getattr(own, name) is not None
                             else getattr(flat, name) for name in SlaTargets.model_fields})


class StepTarget(RulesModel):
    desk: str
    skill_group: str | None = None


class AssignAction(RulesModel):
    assign: StepTarget


class PriorityAction(RulesModel):
    priority: Priority


OverdueAction = Literal["notify", "advance"] | AssignAction | PriorityAction


class EscalationStep(RulesModel):
    id: Id
    name: str | None = None
    target: StepTarget | None = None
    within: Duration
    done_when: Literal["acknowledged", "first_response", "resolved", "manual"] = "manual"
    on_overdue: list[OverdueAction] = Field(default_factory=lambda: list[OverdueAction](
        ["notify"]))


class Escalation(RulesModel):
    id: Id
    name: str | None = None
    business_hours: bool = False
    calendar: str | None = None
    steps: list[EscalationStep] = Field(min_length=1)
    deadline: Duration | None = None
    hard_deadline: Duration | None = None


class Condition(RulesModel):
    """`{field: <dotted path into the message>, <one operator>: <operand>}`."""

    field: str = Field(pattern=r"^[^.\s]+(\.[^.\s]+)*$")
    equals: Any = None
    not_equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    contains: Any = None
    # An RE2 pattern (linear in the text); what RE2 cannot run is refused at load.
    matches: ConfigPattern | None = None
    exists: bool | None = None
    gt: float | None = None
    lt: float | None = None

    @model_validator(mode="after")
    def one_operator(self) -> Condition:
        given = self.operators_given()
        if len(given) != 1:
            got = " and ".join(given) if given else "none"
            raise ValueError(f"needs exactly one operator of {', '.join(OPERATORS)} (got {got})")
        return self

    def operators_given(self) -> list[str]:
        fields_set = self.model_fields_set
        return [op for op in OPERATORS if (op if op != "in" else "in_") in fields_set]

    @property
    def operator(self) -> str:
        return self.operators_given()[0]

    @property
    def operand(self) -> Any:
        op = self.operator
        return getattr(self, op if op != "in" else "in_")


class Match(RulesModel):
    """All conditions must hold; a route without `match` matches every message."""

    channel: Annotated[list[Channel], OneOrMany, Field(min_length=1)] | None = None
    account: Annotated[list[str], OneOrMany, Field(min_length=1)] | None = None
    kind: Annotated[list[Kind], OneOrMany, Field(min_length=1)] | None = None
    where: Annotated[list[Condition], Section] = Field(default_factory=list)


class Delivery(RulesModel):
    desk: str
    skill_group: str | None = None
    skills: list[str] | None = None  # the first group of the desk having them all
    role: Role | None = None
    after: Duration | None = None  # overflow: from received_at, cumulative
    weight: Annotated[int, Field(ge=0, le=100)] | None = None  # split


class Expect(RulesModel):
    """What an inline test expects; only the keys given are compared."""

    route: str | None = None
    mode: str | None = None
    deliveries: list[dict[str, Any]] | None = None
    priority: Priority | None = None
    category: str | None = None
    tags: list[str] | None = None
    sla_policy: str | None = None
    escalation: str | None = None
    first_response_due: AwareDatetime | None = None
    resolution_due: AwareDatetime | None = None


class RuleTest(RulesModel):
    name: str | None = None
    message: dict[str, Any]
    customer: dict[str, Any] | None = None  # the snapshot: `hit` when given, `miss` when not
    expect: Expect


class Target(RulesModel):
    """Where a matched message goes: one desk (`mode: single`) or several (`deliveries`)."""

    desk: str | None = None
    skill_group: str | None = None
    skills: list[str] | None = None
    mode: RouteMode = "single"
    deliveries: list[Delivery] | None = None
    priority: Priority = "normal"
    category: str | None = None
    tags: Annotated[list[str], Section] = Field(default_factory=list)
    sla: str | None = None
    escalation: str | None = None
    taken_when: Literal["acknowledged", "first_response"] = "acknowledged"
    sticky_by: str | None = None  # split: the key whose value picks the delivery
    tests: Annotated[list[RuleTest], Section] = Field(default_factory=list)


class Route(Target):
    id: Id
    description: str | None = None
    match: Match = Field(default_factory=Match)
    when: str | None = None  # an expression of the `when` language; with `match`, both hold

    @field_validator("when", mode="before")
    @classmethod
    def when_as_text(cls, value: Any) -> Any:
        # `when: true` in YAML is a boolean: read it as the expression `true`.
        return ("true" if value else "false") if isinstance(value, bool) else value


class DefaultRoute(Target):
    description: str | None = None


class CustomerLookup(RulesModel):
    timeout: Duration = timedelta(milliseconds=50)
    ttl: Duration = timedelta(seconds=60)
    negative_ttl: Duration = timedelta(seconds=10)
    max_entries: Annotated[int, Field(ge=1)] = 100_000
    backoff: Duration = timedelta(seconds=5)


class Options(RulesModel):
    customer_lookup: CustomerLookup = Field(default_factory=CustomerLookup)


class RoutingConfig(RulesModel):
    """The routing sections of the config (or of the `INTAKE_RULES` file)."""

    label: str | None = None  # shown with the revision
    options: Options = Field(default_factory=Options)
    tests: Annotated[list[RuleTest], Section] = Field(default_factory=list)
    calendars: Annotated[list[CalendarSpec], Section] = Field(default_factory=list)
    desks: Annotated[list[Desk], Section] = Field(default_factory=list)
    skill_groups: Annotated[list[SkillGroup], Section] = Field(default_factory=list)
    categories: Annotated[list[Category], Section] = Field(default_factory=list)
    sla_policies: Annotated[list[SlaPolicy], Section] = Field(default_factory=list)
    escalations: Annotated[list[Escalation], Section] = Field(default_factory=list)
    routes: Annotated[list[Route], Section] = Field(default_factory=list)
    default_route: DefaultRoute


def delivery_roles(mode: str, deliveries: Sequence[Delivery]) -> list[str]:
    """Roles as given; unset ones: the lead role (owner, primary) to the first of them when
    no delivery claims it, the other role (copy, collaborator) to the rest."""
    lead_role, other_role, _ = MODE_ROLES[mode]
    lead_free = all(d.role != lead_role for d in deliveries)
    roles: list[str] = []
    for delivery in deliveries:
        if delivery.role:
            roles.append(delivery.role)
        elif lead_free:
            roles.append(lead_role)
            lead_free = False
        else:
            roles.append(other_role)
    return roles
