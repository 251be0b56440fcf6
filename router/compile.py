"""Conditions, targets and routes compiled into closures: `decide` reads, it never parses.

Each condition becomes a `test(message) -> bool` with its text for explanations; a route
becomes the tuple of its conditions, a `first_failure` closure and its compiled target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from intake.message import Message, RouteTrial
from intake.patterns import compiled

from .models import LEAD_ROLE, Condition, DefaultRoute, Match, Route, Target, delivery_roles
from .paths import MISSING, Reader, reader, resolve_path

# A `matches` condition reads at most this many characters of a text: even a linear pattern
# must not cost a megabyte-long email body's worth of regex work per route.
MATCH_MAX_CHARS = 10_000

Test = Callable[[Message], bool]


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    """One sub-expression: its text for people, what it reads, and its test."""

    label: str  # the field it reads, the key in `saw`
    text: str  # e.g. "form.fields.topic == complaint"
    read: Reader
    test: Test
    show_saw: bool  # whether the explanation repeats the value (not for ==, in, exists)
    # For `==`/`in` on words: the words for which it holds (read through `as_word`), so the
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
    # The index of its first `matches` condition (-1: none): the one a screen answers.
    pattern_at: int = -1

    def failing_condition(self, message: Message, known_false: int = -1) -> int:
        """The first false condition, all of them evaluated (for routes the index skipped);
        `known_false` is one a screen already found false, so it is not searched again."""
        for i, condition in enumerate(self.conditions):
            if i == known_false or not condition.test(message):
                return i
        return -1


def as_word(value: Any) -> str:
    """How `==` and `in` compare a value with a word in the rules: as its text."""
    return value if type(value) is str else str(value)


def render_value(value: Any) -> str:
    """A value as people write it in the rules: bare words, [a, b], null, true."""
    if value is None or value is MISSING:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + ", ".join(render_value(v) for v in value) + "]"
    return str(value)


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


def compile_where(condition: Condition) -> CompiledCondition:
    steps, problem = resolve_path(condition.field)
    assert problem is None, problem  # checked in cross_check
    read = reader(steps)
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
        text = f"{label} {'==' if op == 'equals' else '!='} {render_value(operand)}"
    elif op == "in":
        members = list(operand)
        words = frozenset(m for m in members if isinstance(m, str))
        others = [_scalar_equals(m) for m in members if not isinstance(m, str) and m is not None]

        def is_member(value: Any) -> bool:
            return as_word(value) in words or any(t(value) for t in others)

        holds = _any_of(is_member)
        if None in members:
            held_by_members = holds

            def holds(v: Any) -> bool:
                return held_by_members(v) or not _present(v)
        key = words if len(words) == len(members) else None
        text = f"{label} in {render_value(members)}"
    elif op == "contains":
        def contains(value: Any, operand: Any = operand) -> bool:
            if type(value) is str:
                return isinstance(operand, str) and operand in value
            if type(value) is list or type(value) is dict:
                return operand in value
            return False

        holds = contains
        text = f"{label} contains {render_value(operand)}"
    elif op == "matches":
        search = compiled(operand).search
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
        text = f"{label} {'>' if op == 'gt' else '<'} {render_value(operand)}"
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

    return CompiledCondition(label=attr, text=f"{attr} in {render_value(list(values))}",
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


def compile_route(route: Route | DefaultRoute, route_id: str, position: int) -> CompiledRoute:
    conditions: list[CompiledCondition] = []
    match = route.match if isinstance(route, Route) else Match()
    if match.channel is not None:
        conditions.append(_compile_attr_in("channel", match.channel))
    if match.account is not None:
        conditions.append(_compile_attr_in("account", match.account))
    if match.kind is not None:
        conditions.append(_compile_attr_in("kind", match.kind))
    where = [compile_where(c) for c in match.where]
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
                       for c in conditions), first_failure=_compile_first_failure(tests, offset),
        pattern_at=next((i for i, c in enumerate(conditions) if c.pattern is not None), -1))
