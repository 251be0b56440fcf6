"""The routing rules: models of the config's routing sections, their checks, the compiled RuleSet.

`load_rules(doc, source_bytes)` validates the routing sections of a loaded `ConfigDocument`
(structure through `intake.config.validate`, then the cross-references: desks, skill groups,
categories, SLA policies, message field paths), every problem naming `file:line: field`. The
result is a `RuleSet`: immutable, compiled once per revision into closures, so `decide` reads the
message without parsing anything (tens of microseconds at a few hundred routes).
"""

from __future__ import annotations

import hashlib
import os
import time
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from intake.config import ROUTING_SECTIONS, ConfigDocument, ConfigPattern, validate
from intake.errors import ConfigInvalid
from intake.message import (
    Channel,
    Kind,
    Message,
    Priority,
    Role,
    RouteDecision,
    RouteDelivery,
    RouteTrial,
    Sla,
)
from intake.patterns import Pattern, PatternSet

DEFAULT_ROUTE_ID = "default"
# Decisions stamped on messages keep `tried` short; /explain asks for all of it (`full`).
MAX_TRIED = 20
# `saw` shows what a condition read; a long text is cut so the decision record stays small.
SAW_MAX_CHARS = 200
SAW_MAX_ITEMS = 20
# A `matches` condition reads at most this many characters of a text: even a linear pattern
# must not cost a megabyte-long email body's worth of regex work per route.
MATCH_MAX_CHARS = 10_000

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


class _Missing:
    """A path that leads nowhere in the message (as opposed to a field that is null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


# --------------------------------------------------------------------------- config models


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


# --------------------------------------------------------------------------- compiled form

Loc = tuple[str | int, ...]
Reader = Callable[[Message], Any]
Test = Callable[[Message], bool]


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    """One sub-expression: its text for people, what it reads, and its test."""

    label: str  # the field it reads, the key in `saw`
    text: str  # e.g. "form.fields.topic == complaint"
    read: Reader
    test: Test
    show_saw: bool  # whether the explanation repeats the value (not for ==, in, exists)
    # For `==`/`in` on words: the words for which it holds (read through `_word`), so the
    # RuleSet can look routes up by value instead of testing each one.
    key: frozenset[str] | None = None
    # For `matches`: the pattern, so runs of such routes can share one screen.
    pattern: str | None = None


@dataclass(frozen=True, slots=True)
class CompiledTarget:
    mode: str
    deliveries: tuple[tuple[str, str | None, str], ...]  # (desk, skill_group, role)
    priority: str
    category: str | None
    tags: tuple[str, ...]
    sla: str | None

    @property
    def desk(self) -> str:
        """The owning desk: the routing key of the routed message."""
        return self.deliveries[0][0]

    def describe(self) -> str:
        if self.mode == "single":
            desk, group, _ = self.deliveries[0]
            where = f"desk {desk}" + (f", skill group {group}" if group else "")
        else:
            where = f"{self.mode} to " + ", ".join(
                f"{desk}{'/' + group if group else ''} ({role})"
                for desk, group, role in self.deliveries)
        extras = [f"priority {self.priority}"]
        if self.category:
            extras.append(f"category {self.category}")
        if self.sla:
            extras.append(f"SLA {self.sla}")
        return f"{where}, {', '.join(extras)}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "deliveries": [{"desk": d, "skill_group": g, "role": r}
                           for d, g, r in self.deliveries],
            "priority": self.priority,
            "category": self.category,
            "tags": list(self.tags),
            "sla": {"policy": self.sla} if self.sla else None,
        }


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    id: str
    description: str | None
    position: int  # index in `routes`; the default route comes after all of them
    conditions: tuple[CompiledCondition, ...]
    channels: frozenset[str] | None  # None: any channel
    # The condition the index answers (None: the route is tried for every message of a channel).
    key: CompiledCondition | None
    target: CompiledTarget
    # One trial per condition, `failed` on it (no `saw`), for the short decision record.
    failures: tuple[RouteTrial, ...]
    # The index of the first false condition, or -1; skips what the index already answered.
    first_failure: Callable[[Message], int]

    def failing_condition(self, message: Message) -> int:
        """The first false condition, all of them evaluated (for routes the index skipped)."""
        for i, condition in enumerate(self.conditions):
            if not condition.test(message):
                return i
        return -1


@dataclass(frozen=True, slots=True)
class Screen:
    """A run of `always` routes that each test one field against a pattern.

    One search with their patterns joined says whether any of them can match: when none can
    (the common case, a message for the default route), the run is skipped at once instead
    of searching route by route. When some can, RE2's set search names them, and only those
    routes of the run are tried.
    """

    read: Reader
    patterns: PatternSet
    start: int  # the run is always[start:stop]
    stop: int
    routes: tuple[CompiledRoute, ...]  # always[start:stop]

    def narrow(self, message: Message) -> Sequence[CompiledRoute] | None:
        """The routes of the run worth trying (those whose pattern is found); None: all."""
        value = self.read(message)
        if type(value) is not str:
            # `matches` holds only for text: nothing or MISSING rules the run out.
            return () if value is None or value is MISSING else None
        if not self.patterns.any(value, MATCH_MAX_CHARS):
            return ()
        found = self.patterns.which(value, MATCH_MAX_CHARS)
        if not found:  # RE2's set search gave up on this text: try every route of the run
            return None
        routes = self.routes
        return [routes[i] for i in found]


@dataclass(frozen=True, slots=True)
class ChannelPlan:
    """The routes that can match one channel: tried always, or found by a field's value."""

    always: tuple[CompiledRoute, ...]
    # (reader of a field, value -> the routes keyed on that field and value), one per field
    lookups: tuple[tuple[Reader, dict[str, tuple[CompiledRoute, ...]]], ...]
    screens: tuple[Screen, ...] = ()

    def screened(self, message: Message) -> Sequence[CompiledRoute]:
        """`always` without the routes a screen rules out."""
        if not self.screens:
            return self.always
        kept: list[CompiledRoute] | None = None
        done = 0
        for screen in self.screens:
            narrowed = screen.narrow(message)
            if narrowed is not None:
                if kept is None:
                    kept = []
                kept.extend(self.always[done:screen.start])
                kept.extend(narrowed)
                done = screen.stop
        if kept is None:
            return self.always
        kept.extend(self.always[done:])
        return kept

    def candidates(self, message: Message) -> Sequence[CompiledRoute]:
        """The routes worth testing, in order; every other route is certainly false."""
        always = self.screened(message)
        if not self.lookups:
            return always
        found: list[CompiledRoute] = list(always)
        for read, index in self.lookups:
            value = read(message)
            if type(value) is str:
                hit = index.get(value)
                if hit:
                    found.extend(hit)
            elif type(value) is list:
                for item in value:
                    hit = index.get(_word(item))
                    if hit:
                        found.extend(hit)
            elif value is not None and value is not MISSING:
                hit = index.get(_word(value))
                if hit:
                    found.extend(hit)
        if len(found) > len(always):
            found.sort(key=_position)
        return found


def _position(route: CompiledRoute) -> int:
    return route.position


def _word(value: Any) -> str:
    """How `==` and `in` compare a value with a word in the rules: as its text."""
    return value if type(value) is str else str(value)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The validated, compiled rules of one config revision; `decide` is pure and fast."""

    revision: str
    config: RoutingConfig
    routes: tuple[CompiledRoute, ...]
    default: CompiledRoute
    # channel -> the routes that can match its messages
    plans: dict[str, ChannelPlan]
    loaded_at: datetime
    source: str  # the file(s) it came from, for /rules

    def decide(self, message: Message, *, full: bool = False,
               max_tried: int | None = MAX_TRIED) -> RouteDecision:
        """First matching route wins, else the default route; the record explains why.

        `tried` ends with the route that matched and what its conditions saw. Before it, the
        routes that did not match, each with the first condition that was false: at most
        `max_tried` entries in all and without `saw` for the decision stamped on a message;
        every route, each with the value its failed condition saw, when `full` or
        `max_tried=None` (/explain).
        """
        full = full or max_tried is None
        keep_before = len(self.routes) if full else max(1, max_tried or MAX_TRIED) - 1
        failed_at: dict[int, int] = {}
        matched = self.default
        plan = self.plans.get(message.channel)
        for route in plan.candidates(message) if plan else ():
            failed = route.first_failure(message)
            if failed < 0:
                matched = route
                break
            if route.position < keep_before:
                failed_at[route.position] = failed
        tried: list[RouteTrial] = []
        for route in self.routes[:min(matched.position, keep_before)]:
            index = failed_at.get(route.position)
            if index is None:  # skipped by the channel or a lookup: find what was false
                index = max(route.failing_condition(message), 0)
            if full:
                condition = route.conditions[index]
                tried.append(RouteTrial.model_construct(
                    route=route.id, matched=False, failed=condition.text,
                    saw={condition.label: _saw(condition.read(message))}))
            else:
                # Built once at load, shared by decisions: a decision record is read-only.
                tried.append(route.failures[index])
        saw = {c.label: _saw(c.read(message)) for c in matched.conditions}
        tried.append(RouteTrial.model_construct(route=matched.id, matched=True, failed=None,
                                                saw=saw))
        target = matched.target
        return RouteDecision.model_construct(
            decision_id=new_decision_id(),
            revision=self.revision,
            route=matched.id,
            tried=tried,
            mode=target.mode,
            deliveries=[RouteDelivery.model_construct(desk=d, skill_group=g, role=r)
                        for d, g, r in target.deliveries],
            priority=target.priority,
            category=target.category,
            tags=list(target.tags),
            sla=Sla.model_construct(policy=target.sla) if target.sla else None,
            explanation=self._explain(matched, saw),
        )

    def _explain(self, route: CompiledRoute, saw: dict[str, Any]) -> str:
        if route is self.default:
            before = len(self.routes)
            why = ("no route matched" if before else "no routes are declared") + (
                f" ({before} tried)" if before else "") + "; the default route applies"
        else:
            if route.conditions:
                parts = [c.text + (f" (saw {_render(saw[c.label])})" if c.show_saw else "")
                         for c in route.conditions]
                why = f"route '{route.id}' matched because " + " and ".join(parts)
            else:
                why = f"route '{route.id}' matched: it has no conditions"
            if route.position:
                why += (f", after {route.position} earlier route"
                        f"{'s' if route.position > 1 else ''} did not match")
        return f"{why} → {route.target.describe()}"

    def summary(self) -> dict[str, Any]:
        """What `GET /rules` shows: the revision and every route as people read it."""
        def route_dict(route: CompiledRoute) -> dict[str, Any]:
            return {"id": route.id, "description": route.description,
                    "when": [c.text for c in route.conditions], **route.target.as_dict()}

        config = self.config
        return {
            "revision": self.revision,
            "loaded_at": self.loaded_at.isoformat(),
            "source": self.source,
            "desks": [d.model_dump(exclude_none=True) for d in config.desks],
            "skill_groups": [g.model_dump(exclude_none=True) for g in config.skill_groups],
            "categories": [c.model_dump() for c in config.categories],
            "sla_policies": [p.id for p in config.sla_policies],
            "routes": [route_dict(r) for r in self.routes],
            "default_route": route_dict(self.default),
        }


def new_decision_id() -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so decision ids sort by when they were made."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = ((millis & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | ((rand >> 62) & 0xFFF) << 64
             | 0b10 << 62 | rand & ((1 << 62) - 1))
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _saw(value: Any) -> Any:
    """The value a condition read, small and JSON-ready for the decision record."""
    if value is MISSING or value is None or isinstance(value, bool | int | float):
        return None if value is MISSING else value
    if isinstance(value, str):
        return value if len(value) <= SAW_MAX_CHARS else value[:SAW_MAX_CHARS] + "…"
    if isinstance(value, list | tuple):
        return [_saw(item) for item in value[:SAW_MAX_ITEMS]]
    if isinstance(value, BaseModel):
        return _saw(value.model_dump(mode="json", exclude_none=True))
    if isinstance(value, dict):
        return {str(k): _saw(v) for k, v in list(value.items())[:SAW_MAX_ITEMS]}
    return str(value)


def _render(value: Any) -> str:
    """A value as people write it in the rules: bare words, [a, b], null, true."""
    if value is None or value is MISSING:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    return str(value)


# --------------------------------------------------------------------------- field paths

ATTR, EACH, INDEX, FREE = range(4)
# (how to take the step, attribute or key, list index when the segment is a number):
# ATTR reads a model's attribute, EACH the attribute of every model in a list (fan-out),
# INDEX one element of a list, FREE a key of a free-form object (`form.fields`, `channel_data`).
Step = tuple[int, str, int | None]


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else Any
    return tp


def resolve_path(path: str) -> tuple[tuple[Step, ...], str | None]:
    """Check a dotted path against the message model; return its steps or the problem.

    Lists fan out (`sender.identities.kind` reads the kind of every identity) unless the
    segment is a number (`attachments.0.size`); free-form objects (`form.fields`,
    `channel_data`, `event.data`) accept any key.
    """
    parts = path.split(".")
    if parts[0] == "route":
        return (), "'route' is what the router writes; rules cannot read it"
    steps: list[Step] = []
    tp: Any = Message
    free = False
    for depth, part in enumerate(parts):
        index = int(part) if part.isdigit() else None
        if free:
            steps.append((FREE, part, index))
            continue
        tp = _unwrap_optional(tp)
        fan_out = False
        if typing.get_origin(tp) is list:
            tp = _unwrap_optional(typing.get_args(tp)[0])
            if index is not None:
                steps.append((INDEX, part, index))
                continue
            fan_out = True
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            names = {(info.alias or name): name for name, info in tp.model_fields.items()}
            names.update({name: name for name in tp.model_fields})
            if part not in names:
                known = ", ".join(sorted(k for k in names if not k.endswith("_")
                                         and k not in ("route", "schema_version")))
                where = ".".join(parts[:depth]) or "the message"
                return (), f"'{part}' is not a field of {where} (fields: {known})"
            steps.append((EACH if fan_out else ATTR, names[part], None))
            tp = tp.model_fields[names[part]].annotation
        elif not fan_out and (tp is Any or tp is dict or typing.get_origin(tp) is dict):
            free = True
            steps.append((FREE, part, index))
        else:
            return (), f"'{'.'.join(parts[:depth])}' has no field '{part}'"
    return tuple(steps), None


def _flat(values: Any) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if value is None or value is MISSING:
            continue
        if type(value) is list:
            out.extend(value)
        else:
            out.append(value)
    return out


def _free_step(value: Any, key: str, index: int | None) -> Any:
    if type(value) is dict:
        return value.get(key, MISSING)
    if type(value) is list:
        if index is not None:
            return value[index] if index < len(value) else MISSING
        return _flat(_free_step(item, key, None) for item in value)
    return MISSING


def _reader(steps: tuple[Step, ...]) -> Reader:
    """A closure reading one path; MISSING when it leads nowhere, None when a field is null."""
    if len(steps) == 1 and steps[0][0] == ATTR:
        attr = steps[0][1]

        def read_top(message: Message) -> Any:
            return getattr(message, attr)

        return read_top

    def read(message: Message) -> Any:
        value: Any = message
        for how, key, index in steps:
            if value is None or value is MISSING:
                return value
            if how == ATTR:
                value = getattr(value, key)
            elif how == FREE:
                value = _free_step(value, key, index)
            elif how == EACH:
                value = _flat(getattr(item, key) for item in value)
            else:
                value = value[index] if index is not None and index < len(value) else MISSING
        return value

    return read


# --------------------------------------------------------------------------- compiling


def _noop_first_failure(message: Message) -> int:
    return -1


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _present(value: Any) -> bool:
    return value is not MISSING and value is not None and value != []


def _scalar_equals(operand: Any) -> Callable[[Any], bool]:
    """`value == operand` as the rules mean it: words compare as text, "3" equals 3."""
    if operand is None:
        return lambda v: not _present(v)
    if isinstance(operand, bool):
        return lambda v: v is operand
    if isinstance(operand, int | float):
        return lambda v: _number(v) == operand
    if isinstance(operand, str):
        return lambda v: v == operand if type(v) is str else _present(v) and str(v) == operand
    return lambda v: v == operand


def _any_of(predicate: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """Apply to a scalar, or to any element of a list (a fanned-out path or a list field)."""
    def holds(value: Any) -> bool:
        if value is MISSING or value is None:
            return False
        if type(value) is list:
            return any(predicate(v) for v in value)
        return predicate(value)

    return holds


def _compile_where(condition: Condition) -> CompiledCondition:
    steps, problem = resolve_path(condition.field)
    assert problem is None, problem  # checked in _cross_check
    read = _reader(steps)
    op, operand = condition.operator, condition.operand
    label = condition.field
    key: frozenset[str] | None = None
    holds: Callable[[Any], bool]
    if op in ("equals", "not_equals"):
        equals = _scalar_equals(operand) if operand is None else _any_of(_scalar_equals(operand))
        if op == "equals":
            holds = equals
            key = frozenset({operand}) if isinstance(operand, str) else None
        else:
            holds = lambda v: not equals(v)  # noqa: E731
        text = f"{label} {'==' if op == 'equals' else '!='} {_render(operand)}"
    elif op == "in":
        members = list(operand)
        words = frozenset(m for m in members if isinstance(m, str))
        others = [_scalar_equals(m) for m in members if not isinstance(m, str) and m is not None]

        def is_member(value: Any) -> bool:
            return _word(value) in words or any(t(value) for t in others)

        holds = _any_of(is_member)
        if None in members:
            holds = lambda v, member=holds: member(v) or not _present(v)  # noqa: E731
        key = words if len(words) == len(members) else None
        text = f"{label} in {_render(members)}"
    elif op == "contains":
        def contains(value: Any, operand: Any = operand) -> bool:
            if type(value) is str:
                return isinstance(operand, str) and operand in value
            if type(value) is list or type(value) is dict:
                return operand in value
            return False

        holds = contains
        text = f"{label} contains {_render(operand)}"
    elif op == "matches":
        search = Pattern(operand).search
        holds = _any_of(lambda v: type(v) is str and search(v, MATCH_MAX_CHARS))
        text = f"{label} matches /{operand}/"
    elif op == "exists":
        holds = _present if operand else (lambda v: not _present(v))
        text = f"{label} exists" if operand else f"{label} does not exist"
    elif op in ("gt", "lt"):
        bound = float(operand)

        def compare(value: Any, gt: bool = op == "gt") -> bool:
            number = _number(value)
            return number is not None and (number > bound if gt else number < bound)

        holds = _any_of(compare)
        text = f"{label} {'>' if op == 'gt' else '<'} {_render(operand)}"
    else:  # pragma: no cover - the model allows no other operator
        raise AssertionError(op)

    # Text is what most conditions read: test it without the general path's extra calls.
    if op == "equals" and isinstance(operand, str):
        def test(message: Message) -> bool:
            value = read(message)
            return value == operand if type(value) is str else holds(value)
    elif op == "matches":
        def test(message: Message) -> bool:
            value = read(message)
            return search(value, MATCH_MAX_CHARS) if type(value) is str else holds(value)
    elif op == "in" and key is not None:
        def test(message: Message) -> bool:
            value = read(message)
            return value in key if type(value) is str else holds(value)
    else:
        def test(message: Message) -> bool:
            return holds(read(message))

    return CompiledCondition(label=label, text=text, read=read, test=test,
                             show_saw=op not in ("equals", "in", "exists"), key=key,
                             pattern=operand if op == "matches" else None)


def _compile_attr_in(attr: str, values: Sequence[str]) -> CompiledCondition:
    allowed = frozenset(values)

    def read(message: Message) -> Any:
        return getattr(message, attr)

    def test(message: Message) -> bool:
        return getattr(message, attr) in allowed

    return CompiledCondition(label=attr, text=f"{attr} in {_render(list(values))}",
                             read=read, test=test, show_saw=False, key=allowed)


def _compile_first_failure(tests: tuple[Test, ...], offset: int) -> Callable[[Message], int]:
    if not tests:
        return _noop_first_failure
    if len(tests) == 1:
        (only,) = tests

        def first_failure_one(message: Message) -> int:
            return -1 if only(message) else offset

        return first_failure_one
    numbered = tuple(enumerate(tests, start=offset))

    def first_failure(message: Message) -> int:
        for i, test in numbered:
            if not test(message):
                return i
        return -1

    return first_failure


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


def _compile_target(target: Target) -> CompiledTarget:
    if target.mode == "single":
        assert target.desk is not None
        deliveries: tuple[tuple[str, str | None, str], ...] = (
            (target.desk, target.skill_group, "owner"),)
    else:
        deliveries = tuple((d.desk, d.skill_group, role) for d, role in zip(
            target.deliveries or (), delivery_roles(target.mode, target.deliveries or ()),
            strict=True))
        # The owning desk (the routing key) comes first.
        lead = LEAD_ROLE[target.mode]
        deliveries = tuple(sorted(deliveries, key=lambda d: d[2] != lead))
    return CompiledTarget(mode=target.mode, deliveries=deliveries, priority=target.priority,
                          category=target.category, tags=tuple(target.tags), sla=target.sla)


def _compile_route(route: Route | DefaultRoute, route_id: str, position: int) -> CompiledRoute:
    conditions: list[CompiledCondition] = []
    match = route.match if isinstance(route, Route) else Match()
    if match.channel is not None:
        conditions.append(_compile_attr_in("channel", match.channel))
    if match.account is not None:
        conditions.append(_compile_attr_in("account", match.account))
    if match.kind is not None:
        conditions.append(_compile_attr_in("kind", match.kind))
    where = [_compile_where(c) for c in match.where]
    # The route is looked up by its most telling word condition: a field of `where`, else the
    # account, else the kind (few values, so it narrows least).
    keyed = [c for c in (*where, *reversed(conditions)) if c.key is not None
             and c.label != "channel"]
    conditions.extend(where)
    # The channel was checked by the plan; the key condition is tested again, which keeps
    # the lookup a pre-filter that can only ever let through too much, never too little.
    offset = 1 if match.channel is not None else 0
    tests = tuple(c.test for c in conditions[offset:])
    return CompiledRoute(
        id=route_id, description=route.description, position=position,
        conditions=tuple(conditions),
        channels=frozenset(match.channel) if match.channel is not None else None,
        key=keyed[0] if keyed else None,
        target=_compile_target(route),
        failures=tuple(RouteTrial(route=route_id, matched=False, failed=c.text)
                       for c in conditions), first_failure=_compile_first_failure(tests, offset))


def _plan(routes: Sequence[CompiledRoute], channel: str) -> ChannelPlan:
    always: list[CompiledRoute] = []
    lookups: dict[str, tuple[Reader, dict[str, list[CompiledRoute]]]] = {}
    for route in routes:
        if route.channels is not None and channel not in route.channels:
            continue
        if route.key is None or route.key.key is None:
            always.append(route)
            continue
        _, index = lookups.setdefault(route.key.label, (route.key.read, {}))
        for word in route.key.key:
            index.setdefault(word, []).append(route)
    return ChannelPlan(always=tuple(always), lookups=tuple(
        (read, {word: tuple(found) for word, found in index.items()})
        for read, index in lookups.values()), screens=_screens(always))


SCREEN_MIN_ROUTES = 4  # below this, testing the routes one by one is as cheap


def _screen_condition(route: CompiledRoute) -> CompiledCondition | None:
    """A `matches` test the route needs (its conditions all must hold)."""
    for condition in route.conditions:
        if condition.pattern is not None:
            return condition
    return None


def _screens(always: Sequence[CompiledRoute]) -> tuple[Screen, ...]:
    """Screens for the runs of consecutive routes that each need a pattern on one field."""
    screens: list[Screen] = []
    i = 0
    while i < len(always):
        first = _screen_condition(always[i])
        j = i + 1
        if first is not None:
            patterns = [first.pattern]
            while j < len(always) and (later := _screen_condition(always[j])) is not None \
                    and later.label == first.label:
                patterns.append(later.pattern)
                j += 1
            if j - i >= SCREEN_MIN_ROUTES:
                # RE2 scopes flags to the group, so `(?i)` patterns join as they are.
                screens.append(Screen(read=first.read, patterns=PatternSet(
                    [p for p in patterns if p is not None]), start=i, stop=j,
                    routes=tuple(always[i:j])))
        i = j
    return tuple(screens)


# --------------------------------------------------------------------------- loading


def _cross_check(config: RoutingConfig) -> list[tuple[Loc, str]]:
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


def _where(doc: ConfigDocument, loc: Loc) -> str:
    source = doc.sources.get(str(loc[0])) if loc else None
    return (source or doc).where(loc)


def load_rules(doc: ConfigDocument, source_bytes: bytes | str) -> RuleSet:
    """Validate and compile the routing sections of `doc`; raise ConfigInvalid naming lines.

    `source_bytes` are the bytes of the file(s) the sections came from: the revision is their
    sha256, so ops can compare it with `sha256sum rules.yaml`.
    """
    data = {key: doc.data[key] for key in ROUTING_SECTIONS if key in doc.data}
    config = validate(doc, RoutingConfig, data)
    problems = _cross_check(config)
    if problems:
        raise ConfigInvalid([f"{_where(doc, loc)}: {'.'.join(map(str, loc))}: {message}"
                             for loc, message in problems])
    raw = source_bytes.encode("utf-8") if isinstance(source_bytes, str) else source_bytes
    routes = tuple(_compile_route(route, route.id, i) for i, route in enumerate(config.routes))
    default = _compile_route(config.default_route, DEFAULT_ROUTE_ID, len(routes))
    plans = {channel: _plan(routes, channel) for channel in CHANNELS}
    sources = sorted({str(s.path) for s in doc.sources.values()} | (
        {str(doc.path)} if len(doc.sources) < len(data) else set()))
    return RuleSet(revision=hashlib.sha256(raw).hexdigest(), config=config, routes=routes,
                   default=default, plans=plans, loaded_at=datetime.now(UTC),
                   source=", ".join(sources))
