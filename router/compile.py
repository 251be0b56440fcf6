"""Routes compiled into closures: `decide` reads, it never parses.

A route's whole condition is one tree of the `when` language: v1's `match` (channel, account,
kind, `where`) becomes comparison nodes, written in expression syntax, ahead of the `when`
expression's conjuncts. Each top-level conjunct becomes a `CompiledCondition` (the channel index
and the pattern screens read `key` and `pattern` from them); a route is the tuple of its
conditions, a `first_failure` closure and its compiled target.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from intake.calendars import Calendar
from intake.message import Message, RouteDelivery, RouteTrial
from intake.patterns import literal as re2_literal

from .evaluate import (
    MATCH_MAX_CHARS,
    ExprError,
    Fn,
    as_word,
    compile_all,
    failing_node,
    key_reader,
    reads_customer,
    saw_of,
)
from .expr import Node, literal_source, parse, to_source
from .models import LEAD_ROLE, Condition, Delivery, Match, RoutingConfig, Target, delivery_roles

__all__ = ["MATCH_MAX_CHARS", "CompiledCondition", "CompiledRoute", "CompiledTarget",
           "Resolved", "as_word", "compile_route", "compile_where", "match_nodes",
           "route_tree"]

Test = Callable[[Message], bool]
# (desk, skill_group, role, after, weight) of one delivery, the group resolved from `skills`
Resolved = tuple[str, str | None, str, timedelta | None, int | None]


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    """One top-level conjunct: its source text, what it reads, its test and explanation."""

    label: str  # the key it reads (or its own text), for the index
    text: str  # expression syntax, e.g. "form.fields.topic == 'complaint'"
    read: Fn
    test: Test
    node: Node
    fns: Mapping[int, Fn]  # a closure per node of the conjunct, for explanations
    # For `==`/`in` on words: the words for which it holds (read through `as_word`), so the
    # RuleSet can look routes up by value instead of testing each one.
    key: frozenset[str] | None = None
    # For `matches` on a key (or `contains` a text, or an `or` of those on one key): the
    # pattern, so the routes needing one on the same key can share one screen.
    pattern: str | None = None
    # Whether the pattern holds only for the text's first MATCH_MAX_CHARS characters, as
    # `matches` reads them; a `contains` reads all of it, so a longer text is not screened.
    bounded: bool = True
    # Whether it reads a `customer.*` key: a decision made without the customer never
    # names it as the false one (it is unknown there, not false).
    reads_customer: bool = False

    def explain(self, message: Message) -> tuple[str, dict[str, Any]]:
        """The first false sub-expression (source text) and what its keys and calls saw."""
        node = failing_node(self.node, self.fns, message)
        return node.text, saw_of(node, self.fns, message)

    def saw(self, message: Message) -> dict[str, Any]:
        return saw_of(self.node, self.fns, message)


@dataclass(frozen=True, slots=True)
class CompiledTarget:
    mode: str
    deliveries: tuple[Resolved, ...]  # the owning (lead) delivery first
    priority: str
    category: str | None
    tags: tuple[str, ...]
    sla: str | None
    escalation: str | None = None
    taken_when: str = "acknowledged"
    sticky_by: Fn | None = None  # split: reads the key whose value picks the delivery
    sticky_key: str | None = None
    # The record's deliveries when nothing in them depends on the message (no overflow times).
    static_deliveries: tuple[RouteDelivery, ...] | None = None

    @property
    def desk(self) -> str:
        """The owning desk: the routing key of the routed message (split: see `pick`)."""
        return self.deliveries[0][0]

    def describe(self) -> str:
        if self.mode == "single":
            desk, group = self.deliveries[0][:2]
            where = f"desk {desk}" + (f", skill group {group}" if group else "")
        else:
            where = f"{self.mode} to " + ", ".join(
                f"{d[0]}{'/' + d[1] if d[1] else ''} ({d[2]}"
                + (f", {d[4]}%" if d[4] is not None else "") + ")" for d in self.deliveries)
        extras = [f"priority {self.priority}"]
        if self.category:
            extras.append(f"category {self.category}")
        if self.sla:
            extras.append(f"SLA {self.sla}")
        if self.escalation:
            extras.append(f"escalation {self.escalation}")
        return f"{where}, {', '.join(extras)}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "deliveries": [_delivery_dict(d) for d in self.deliveries],
            "priority": self.priority,
            "category": self.category,
            "tags": list(self.tags),
            "sla": self.sla,
            "escalation": self.escalation,
            "taken_when": self.taken_when,
            "sticky_by": self.sticky_key,
        }


def _delivery_dict(d: Resolved) -> dict[str, Any]:
    out: dict[str, Any] = {"desk": d[0], "skill_group": d[1], "role": d[2]}
    if d[3] is not None:
        out["after"] = int(d[3].total_seconds())
    if d[4] is not None:
        out["weight"] = d[4]
    return out


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
    tree: Node | None = None  # the whole condition (match and when), for lint
    reads_customer: bool = False

    def failing_condition(self, message: Message, known_false: int = -1, *,
                          without_customer: bool = False) -> int:
        """The first false condition, all of them evaluated (for routes the index skipped);
        `known_false` is one a screen already found false, so it is not searched again.
        `without_customer`: the customer was not looked up, so conditions reading it are
        passed over (the index and the screens never rule a route out by one of those)."""
        for i, condition in enumerate(self.conditions):
            if without_customer and condition.reads_customer:
                continue
            if i == known_false or not condition.test(message):
                return i
        return -1

    @property
    def picks_by_customer(self) -> bool:
        """Its split picks a delivery by a `customer.*` key (`sticky_by`)."""
        key = self.target.sticky_key
        return key is not None and key.startswith("customer.")


# -- v1's `match` as nodes of the same tree --

def _leaf(kind: str, value: Any, children: tuple[Node, ...] = ()) -> Node:
    # The printer is the single source of the text: what it prints, `when` parses back.
    return Node(kind, to_source(Node(kind, "", value, children)), value, children)


def _key(path: str) -> Node:
    return Node("key", path, path)


def _literal(value: Any) -> Node:
    if isinstance(value, list | tuple):
        items = tuple(_literal(v) for v in value)
        return Node("list", literal_source(list(value)), tuple(value), items)
    return Node("literal", literal_source(value), value)


def condition_node(condition: Condition) -> Node:
    """A v1 `where` condition as the node meaning the same (`equals: x` → `field == 'x'`)."""
    op, operand, key = condition.operator, condition.operand, _key(condition.field)
    if op == "exists":
        node = _leaf("exists", None, (key,))
        return node if operand else _leaf("not", None, (node,))
    symbol = {"equals": "==", "not_equals": "!=", "in": "in", "contains": "contains",
              "matches": "matches", "gt": ">", "lt": "<"}[op]
    if op in ("gt", "lt") and float(operand).is_integer():
        operand = int(operand)
    return _leaf("compare", symbol, (key, _literal(operand)))


def match_nodes(match: Match) -> list[Node]:
    nodes: list[Node] = []
    for attr in ("channel", "account", "kind"):
        values = getattr(match, attr)
        if values is not None:
            nodes.append(_leaf("compare", "==", (_key(attr), _literal(values[0])))
                          if len(values) == 1 else
                          _leaf("compare", "in", (_key(attr), _literal(list(values)))))
    nodes.extend(condition_node(c) for c in match.where)
    return nodes


def route_tree(match: Match | None, when: str | None) -> tuple[list[Node], Node | None]:
    """The conjuncts of a route's condition (match first, in v1's order) and the whole tree."""
    nodes = match_nodes(match) if match is not None else []
    if when is not None:
        tree = parse(when)
        nodes.extend(tree.children if tree.kind == "and" else (tree,))
    # `true` conjuncts hold for every message: they add nothing to test.
    nodes = [n for n in nodes if not (n.kind == "literal" and n.value is True)]
    if not nodes:
        return [], None
    whole = nodes[0] if len(nodes) == 1 else Node(
        "and", " and ".join(f"({n.text})" if n.kind == "or" else n.text for n in nodes),
        None, tuple(nodes))
    return nodes, whole


def compile_condition(node: Node, calendars: Mapping[str, Calendar]) -> CompiledCondition:
    fns = compile_all(node, calendars)
    fn = fns.get(id(node))
    test: Test
    if fn is None:  # a literal alone: `false`
        held = node.value is True

        def test_literal(message: Message) -> bool:
            return held
        test = test_literal
    elif node.kind in ("key", "call"):  # a value alone holds when it is `true`
        def test_value(message: Message) -> bool:
            return fn(message) is True
        test = test_value
    else:
        test = fn
    label, read = node.text, typing.cast(Fn, test)
    key: frozenset[str] | None = None
    pattern: str | None = None
    bounded = True
    if node.kind == "compare" and node.children[0].kind in ("key", "call") \
            and not reads_customer(node):
        left, right = node.children
        label, read = _reads(left), fns[id(left)]
        if node.value == "==" and right.kind == "literal" and isinstance(right.value, str):
            key = frozenset({right.value})
        elif node.value == "in" and right.kind == "list" and right.value and all(
                isinstance(v, str) for v in right.value):
            key = frozenset(right.value)
        else:
            pattern, bounded = _text_pattern(node) or (None, True)
    elif node.kind == "or" and not reads_customer(node):
        # `text contains 'a' or text matches 'b'`: one pattern on one key, `(?:a)|(?:b)`.
        parts = [_text_pattern(child) for child in node.children]
        lefts = {_reads(child.children[0]) for child in node.children if child.children}
        if all(parts) and len(lefts) == 1:
            label, read = lefts.pop(), fns[id(node.children[0].children[0])]
            pattern = "|".join(f"(?:{part[0]})" for part in parts if part)
            bounded = all(part[1] for part in parts if part)
    return CompiledCondition(label=label, text=node.text, read=read, test=test, node=node,
                             fns=fns, key=key, pattern=pattern, bounded=bounded,
                             reads_customer=reads_customer(node))


def _reads(node: Node) -> str:
    """What a key or call reads, as the index names it: the key's path, or the call's text."""
    return str(node.value) if node.kind == "key" else node.text


def _text_pattern(node: Node) -> tuple[str, bool] | None:
    """(pattern, bounded) for `key matches 'p'` or `key contains 'text'` (a key or a call, not
    a customer key): the RE2 pattern that is found in a text exactly when the test holds."""
    if node.kind != "compare" or node.children[0].kind not in ("key", "call") \
            or reads_customer(node):
        return None
    right = node.children[1]
    if node.value == "matches":
        return str(right.value), True
    if node.value == "contains" and right.kind == "literal" and isinstance(right.value, str) \
            and right.value:
        return re2_literal(right.value), False
    return None


def compile_where(condition: Condition) -> CompiledCondition:
    return compile_condition(condition_node(condition), {})


def _noop_first_failure(message: Message) -> int:
    return -1


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


def resolve_group(config: RoutingConfig, desk: str, group: str | None,
                  skills: Sequence[str] | None) -> tuple[str | None, bool]:
    """The group of a delivery: named, or the first of the desk (file order) having all the
    skills, else the desk's default group; the flag says whether the skills were satisfied."""
    if group is not None or skills is None:
        if group is None:
            group = next((d.default_skill_group for d in config.desks if d.id == desk), None)
        return group, True
    wanted = set(skills)
    for candidate in config.skill_groups:
        if candidate.desk == desk and wanted <= set(candidate.skills):
            return candidate.id, True
    return next((d.default_skill_group for d in config.desks if d.id == desk), None), False


def _compile_target(target: Target, config: RoutingConfig) -> CompiledTarget:
    def resolved(d: Delivery | Target, role: str) -> Resolved:
        assert d.desk is not None
        group, _ = resolve_group(config, d.desk, d.skill_group, d.skills)
        after = d.after if isinstance(d, Delivery) else None
        weight = d.weight if isinstance(d, Delivery) else None
        return (d.desk, group, role, after, weight)

    if target.mode == "single":
        deliveries: tuple[Resolved, ...] = (resolved(target, "owner"),)
    else:
        roles = delivery_roles(target.mode, target.deliveries or ())
        deliveries = tuple(resolved(d, r) for d, r in zip(target.deliveries or (), roles,
                                                          strict=True))
        if target.mode != "split":  # the owning desk (the routing key) comes first
            lead = LEAD_ROLE[target.mode]
            deliveries = tuple(sorted(deliveries, key=lambda d: d[2] != lead))
    try:
        sticky = key_reader(target.sticky_by) if target.sticky_by else None
    except ExprError as exc:
        raise ExprError(exc.code, str(exc), sticky=True) from exc
    static = None if any(d[3] is not None for d in deliveries) else tuple(
        RouteDelivery.model_construct(desk=d[0], skill_group=d[1], role=d[2], after=None,
                                      due=None) for d in deliveries)
    return CompiledTarget(mode=target.mode, deliveries=deliveries, priority=target.priority,
                          category=target.category, tags=tuple(target.tags), sla=target.sla,
                          escalation=target.escalation, taken_when=target.taken_when,
                          sticky_by=sticky, sticky_key=target.sticky_by,
                          static_deliveries=static)


def compile_route(route: Target, route_id: str, position: int, config: RoutingConfig,
                  calendars: Mapping[str, Calendar]) -> CompiledRoute:
    """Raises ParseError or ExprError for a `when` that cannot be compiled."""
    match: Match | None = getattr(route, "match", None)
    nodes, tree = route_tree(match, getattr(route, "when", None))
    conditions = [compile_condition(n, calendars) for n in nodes]
    channels: frozenset[str] | None = (
        frozenset(match.channel) if match is not None and match.channel else None)
    offset = 1 if channels is not None else 0
    if channels is None:
        # A `when` conjunct `channel == 'x'` / `channel in [...]` also files the route under
        # those channels only (it is still tested: the plan is a pre-filter).
        channels = next((c.key for c in conditions if c.label == "channel" and c.key), None)
    # The route is looked up by its most telling word condition: a field of `where` or
    # `when`, else the account, else the kind (few values, so it narrows least).
    keyed = sorted((c for c in conditions if c.key is not None and c.label != "channel"),
                   key=lambda c: {"account": 1, "kind": 2}.get(c.label, 0))
    # v1's channel was checked by the plan; the key condition is tested again, which keeps
    # the lookup a pre-filter that can only ever let through too much, never too little.
    tests = tuple(c.test for c in conditions[offset:])
    return CompiledRoute(
        id=route_id, description=getattr(route, "description", None), position=position,
        conditions=tuple(conditions), channels=channels,
        key=keyed[0] if keyed else None,
        target=_compile_target(route, config),
        failures=tuple(RouteTrial(route=route_id, matched=False, failed=c.text)
                       for c in conditions), first_failure=_compile_first_failure(tests, offset),
        pattern_at=next((i for i, c in enumerate(conditions) if c.pattern is not None), -1),
        tree=tree, reads_customer=tree is not None and reads_customer(tree))
