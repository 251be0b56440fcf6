"""The routing sections of the config as models, and the checks between them (`cross_check`)."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from intake.config import ConfigPattern
from intake.message import Channel, Kind, Priority, Role

from .paths import resolve_path

DEFAULT_ROUTE_ID = "default"

CHANNELS: tuple[str, ...] = typing.get_args(Channel)
OPERATORS = ("equals", "not_equals", "in", "contains", "matches", "exists", "gt", "lt")
# Ids end up in routing keys (`intake.routed` is a topic exchange keyed by desk): no dots,
# no wildcards, no spaces.
ID_PATTERN = r"^[A-Za-z0-9_-]+$"
RouteMode = Literal["single", "multi", "primary_secondary"]
MODE_ROLES: dict[str, tuple[Role, Role, frozenset[str]]] = {
    # mode: (the owning role, the default role of the others, roles allowed)
    "multi": ("owner", "copy", frozenset({"owner", "copy", "collaborator"})),
    "primary_secondary": ("primary", "collaborator",
                          frozenset({"primary", "collaborator", "overflow"})),
}
LEAD_ROLE = {"single": "owner", "multi": "owner", "primary_secondary": "primary"}

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


class Declared(BaseModel):
    """An entry of a section a later issue deepens (calendars, SLA policies, escalations)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: Id


class Desk(RulesModel):
    id: Id
    name: str = Field(min_length=1)
    calendar: str | None = None
    # 单服务台 / 多服务台 / 主从服务台: how this desk shares work; read by later issues.
    mode: Literal["single", "multi", "primary_secondary", "split"] | None = None


class SkillGroup(RulesModel):
    id: Id
    desk: str
    name: str | None = None
    skills: list[str] = Field(default_factory=list)
    # TODO(issue: skill groups in depth): a closed vocabulary of strategies.
    strategy: str = "round_robin"


class Category(RulesModel):
    id: Id
    name: str = Field(min_length=1)


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
    role: Role | None = None


class Target(RulesModel):
    """Where a matched message goes: one desk (`mode: single`) or several (`deliveries`)."""

    desk: str | None = None
    skill_group: str | None = None
    mode: RouteMode = "single"
    deliveries: list[Delivery] | None = None
    priority: Priority = "normal"
    category: str | None = None
    tags: Annotated[list[str], Section] = Field(default_factory=list)
    sla: str | None = None


class Route(Target):
    id: Id
    description: str | None = None
    match: Match = Field(default_factory=Match)


class DefaultRoute(Target):
    description: str | None = None


class RoutingConfig(RulesModel):
    """The routing sections of the config (or of the `INTAKE_RULES` file)."""

    calendars: Annotated[list[Declared], Section] = Field(default_factory=list)
    desks: Annotated[list[Desk], Section] = Field(default_factory=list)
    skill_groups: Annotated[list[SkillGroup], Section] = Field(default_factory=list)
    categories: Annotated[list[Category], Section] = Field(default_factory=list)
    sla_policies: Annotated[list[Declared], Section] = Field(default_factory=list)
    escalations: Annotated[list[Declared], Section] = Field(default_factory=list)
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


def cross_check(config: RoutingConfig) -> list[tuple[Loc, str]]:
    """What the models cannot see alone: references between sections, paths, modes."""
    problems: list[tuple[Loc, str]] = []
    for section in ("calendars", "desks", "skill_groups", "categories", "sla_policies",
                    "escalations", "routes"):
        seen: set[str] = set()
        for i, entry in enumerate(getattr(config, section)):
            if entry.id in seen:
                problems.append(((section, i, "id"), f"duplicate id '{entry.id}'"))
            seen.add(entry.id)
    desks = {d.id for d in config.desks}
    groups = {g.id: g.desk for g in config.skill_groups}
    categories = {c.id for c in config.categories}
    calendars = {c.id for c in config.calendars}
    policies = {p.id for p in config.sla_policies}

    def known(kind: str, value: str, names: set[str] | dict[str, str]) -> str:
        listed = ", ".join(sorted(names)) or "none"
        return f"unknown {kind} '{value}' (declared: {listed})"

    for i, desk in enumerate(config.desks):
        if desk.calendar and calendars and desk.calendar not in calendars:
            problems.append((("desks", i, "calendar"), known("calendar", desk.calendar,
                                                              calendars)))
    for i, group in enumerate(config.skill_groups):
        if group.desk not in desks:
            problems.append((("skill_groups", i, "desk"), known("desk", group.desk, desks)))

    def check_desk(loc: Loc, desk: str | None, group: str | None) -> None:
        if desk is None:
            problems.append(((*loc, "desk"), "required with mode single"))
            return
        if desk not in desks:
            problems.append(((*loc, "desk"), known("desk", desk, desks)))
        if group is not None:
            if group not in groups:
                problems.append(((*loc, "skill_group"), known("skill group", group, groups)))
            elif desk in desks and groups[group] != desk:
                problems.append(((*loc, "skill_group"), f"skill group '{group}' belongs to "
                                 f"desk '{groups[group]}', not '{desk}'"))

    def check_target(loc: Loc, target: Target) -> None:
        if target.mode == "single":
            if target.deliveries is not None:
                problems.append(((*loc, "deliveries"),
                                 "deliveries need mode multi or primary_secondary; "
                                 "mode single takes desk and skill_group"))
            else:
                check_desk(loc, target.desk, target.skill_group)
        else:
            for name in ("desk", "skill_group"):
                if getattr(target, name) is not None:
                    problems.append(((*loc, name), f"with mode {target.mode}, name each desk "
                                     "under deliveries"))
            if not target.deliveries or len(target.deliveries) < 2:
                problems.append(((*loc, "deliveries"),
                                 f"mode {target.mode} needs at least two deliveries"))
            else:
                allowed = MODE_ROLES[target.mode][2]
                roles = delivery_roles(target.mode, target.deliveries)
                seen_desks: set[str] = set()
                for j, delivery in enumerate(target.deliveries):
                    dloc = (*loc, "deliveries", j)
                    check_desk(dloc, delivery.desk, delivery.skill_group)
                    if delivery.desk in seen_desks:
                        problems.append(((*dloc, "desk"), f"desk '{delivery.desk}' is named "
                                         "twice"))
                    seen_desks.add(delivery.desk)
                    if roles[j] not in allowed:
                        problems.append(((*dloc, "role"), f"role {roles[j]} does not fit mode "
                                         f"{target.mode} (use {', '.join(sorted(allowed))})"))
                lead = LEAD_ROLE[target.mode]
                if roles.count(lead) != 1:
                    problems.append(((*loc, "deliveries"), f"mode {target.mode} needs exactly "
                                     f"one delivery with role {lead} (got {roles.count(lead)})"))
        if target.category is not None and categories and target.category not in categories:
            problems.append(((*loc, "category"), known("category", target.category,
                                                       categories)))
        if target.sla is not None and target.sla not in policies:
            problems.append(((*loc, "sla"), known("SLA policy", target.sla, policies)))

    for i, route in enumerate(config.routes):
        if route.id == DEFAULT_ROUTE_ID:
            problems.append((("routes", i, "id"), f"'{DEFAULT_ROUTE_ID}' names the default "
                             "route; choose another id"))
        check_target(("routes", i), route)
        for j, condition in enumerate(route.match.where):
            _, problem = resolve_path(condition.field)
            if problem:
                problems.append((("routes", i, "match", "where", j, "field"), problem))
    check_target(("default_route",), config.default_route)
    return problems
