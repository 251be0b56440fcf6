"""Lint: shadowed, unreachable and overlapping routes on the disjunctive normal form of each
route's whole condition (`match` and `when`), plus unused declarations, skills no group has
and calendar years cn_statutory does not cover.

An atom is `(key, op, operand, negated)`; a conjunction is a tuple of atoms; a route's
condition is a list of conjunctions (empty list: never true; one empty conjunction: always).
Implication is decided soundly for the cases that matter (same atom, subset of conjuncts,
`==` implying `in`/`!=`/`not in`/ranges, `in [a,b]` ⇒ `in [a,b,c]`, `>= 3` ⇒ `>= 2`,
`contains 'YXZ'` ⇒ `contains 'X'`); anything it cannot decide counts as "not implied".
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from intake.calendars import coverage_warning
from intake.message import Message

from .check import Finding
from .compile import resolve_group
from .decide import RuleSet
from .evaluate import CUSTOMER_KEYS, IDENTITY_KEYS, number
from .expr import Node
from .models import Delivery, Target
from .paths import ATTR, EACH, INDEX, resolve_path

MAX_CONJUNCTIONS = 256
NEGATE = {"==": "!=", "!=": "==", "in": "not in", "not in": "in", "exists": "not exists",
          "not exists": "exists"}

SINGULAR = {"desks": "desk", "skill_groups": "skill group", "sla_policies": "SLA policy",
            "escalations": "escalation", "categories": "category", "calendars": "calendar"}

Atom = tuple[str, str, Any, bool]
Conjunction = tuple[Atom, ...]


class TooLarge(Exception):
    pass


def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def atom(node: Node, negated: bool) -> Atom:
    if node.kind == "compare" and node.children[0].kind == "key" \
            and node.children[1].kind in ("literal", "list"):
        key, op = str(node.children[0].value), str(node.value)
        value = _freeze(node.children[1].value)
        if negated and op in NEGATE:
            return (key, NEGATE[op], value, False)
        return (key, op, value, negated)
    if node.kind == "exists" and node.children[0].kind == "key":
        return (str(node.children[0].value), "not exists" if negated else "exists", None, False)
    return (node.text, "opaque", None, negated)


def dnf(node: Node | None, negated: bool = False) -> list[Conjunction]:
    if node is None:
        return [()]
    kind = node.kind
    if kind == "not":
        return dnf(node.children[0], not negated)
    if kind == "literal" and isinstance(node.value, bool | type(None)):
        holds = (node.value is True) != negated
        return [()] if holds else []
    if kind in ("and", "or"):
        conjunctive = (kind == "and") != negated
        parts = [dnf(c, negated) for c in node.children]
        if not conjunctive:
            out = [c for part in parts for c in part]
        else:
            out = [()]
            for part in parts:
                out = [a + b for a in out for b in part]
                if len(out) > MAX_CONJUNCTIONS:
                    raise TooLarge
        if len(out) > MAX_CONJUNCTIONS:
            raise TooLarge
        return out
    return [(atom(node, negated),)]


@functools.lru_cache(maxsize=4096)
def is_scalar(key: str) -> bool:
    """Whether a key holds one value (not a list, not a fan-out): only then does `x == a`
    exclude `x == b`."""
    if key in IDENTITY_KEYS or (key in CUSTOMER_KEYS):
        return True
    steps, problem = resolve_path(key)
    if problem or any(step[0] != ATTR for step in steps):
        return False
    tp: Any = Message
    for _, name, _ in steps:
        if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
            return False
        tp = tp.model_fields[name].annotation
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) is list or any(typing.get_origin(a) is list for a in args):
            return False
        if args and typing.get_origin(tp) is not typing.Literal:
            tp = args[0]
    return True


@functools.lru_cache(maxsize=4096)
def is_list(key: str) -> bool:
    """A key typed as a list (`flags`, `attachments`) or fanned out through one."""
    steps, problem = resolve_path(key)
    if problem or key in IDENTITY_KEYS or key.startswith("customer."):
        return False
    if any(step[0] in (EACH, INDEX) for step in steps):
        return True
    return not is_scalar(key) and all(step[0] == ATTR for step in steps)


def _words(values: Any) -> set[str]:
    return {str(v) for v in (values if isinstance(values, tuple) else (values,))}


def _in_range(v: float, op: str, bound: float) -> bool:
    return {">": v > bound, ">=": v >= bound, "<": v < bound, "<=": v <= bound}[op]


def implies(a: Atom, b: Atom) -> bool:
    """Whether `a` holding makes `b` hold."""
    if a == b:
        return True
    key, op, value, neg = a
    bkey, bop, bvalue, bneg = b
    if key != bkey or neg or bneg:
        return False
    scalar = is_scalar(key)
    if bop == "exists":
        return op in ("==", "in", "contains", "matches", ">", ">=", "<", "<=") and (
            op != "==" or value is not None) and (op != "in" or None not in value)
    if op == "==":
        if bop == "in":
            return str(value) in _words(bvalue)
        if bop == "!=" and scalar:
            return str(value) != str(bvalue)
        if bop == "not in" and scalar:
            return str(value) not in _words(bvalue)
        if bop in (">", ">=", "<", "<="):  # the same element satisfies both: sound on lists
            x, y = number(value), number(bvalue)
            return x is not None and y is not None and _in_range(x, bop, y)
        if bop == "contains" and scalar:
            return isinstance(value, str) and isinstance(bvalue, str) and bvalue in value
        return False
    if op == "in":
        if bop == "in":
            return _words(value) <= _words(bvalue)
        if bop == "!=" and scalar:
            return str(bvalue) not in _words(value)
        if bop == "not in" and scalar:
            return not (_words(value) & _words(bvalue))
        return False
    if op in (">", ">=", "<", "<=") and bop in (">", ">=", "<", "<="):
        x, y = number(value), number(bvalue)
        if x is None or y is None or (op[0] != bop[0]):
            return False
        if op[0] == ">":
            return x > y or (x == y and (bop == ">=" or op == ">"))
        return x < y or (x == y and (bop == "<=" or op == "<"))
    if op == "contains" and bop == "contains":  # substrings: on text, not on list elements
        return isinstance(value, str) and isinstance(bvalue, str) and bvalue in value \
            and not is_list(key)
    return False


def conj_implies(specific: Conjunction, general: Conjunction) -> bool:
    return all(any(implies(a, b) for a in specific) for b in general)


def contradicts(a: Atom, b: Atom) -> bool:
    key, op, value, neg = a
    bkey, bop, bvalue, bneg = b
    if key != bkey:
        return False
    if op == bop and value == bvalue and neg != bneg:
        return True
    if neg or bneg:
        return False
    if {op, bop} == {"exists", "not exists"}:
        return True
    if not is_scalar(key):
        return False
    if op == "==" and bop in ("==", "!=", "in", "not in", ">", ">=", "<", "<="):
        if bop == "==":
            return str(value) != str(bvalue)
        if bop in ("!=", "in", "not in"):
            return not implies(a, b)
        return number(value) is not None and not implies(a, b)
    if op == "in" and bop == "in":
        return not (_words(value) & _words(bvalue))
    if op in (">", ">=") and bop in ("<", "<="):
        x, y = number(value), number(bvalue)
        return x is not None and y is not None and (x > y or (x == y and (
            op == ">" or bop == "<")))
    return False


def self_contradictory(conjunction: Conjunction) -> bool:
    return any(contradicts(a, b) or contradicts(b, a)
               for i, a in enumerate(conjunction) for b in conjunction[i + 1:])


def lint_rules(rules: RuleSet, *, today: datetime | None = None) -> list[Finding]:
    findings: list[Finding] = []
    seen = _Earlier()
    for route in rules.routes:
        loc = ("routes", route.position)
        try:
            form = [c for c in dnf(route.tree) if not self_contradictory(c)]
        except TooLarge:
            findings.append(Finding("warning", "lint-skipped", loc, f"over {MAX_CONJUNCTIONS} "
                                    "conjunctions: not checked for shadowing", route.id))
            continue
        if not form:
            findings.append(Finding("error", "unreachable-route", loc, "its condition "
                                    "contradicts itself: no message can match", route.id))
            continue
        shadowing = seen.shadowing(form)
        if shadowing is not None:
            findings.append(Finding("error", "shadowed-route", loc, "every message it matches "
                                    f"is taken first by route(s) {', '.join(shadowing)}",
                                    route.id))
            continue
        for other in seen.overlapping(form):
            findings.append(Finding("warning", "overlapping-routes", loc, "some messages "
                                    f"match it and the earlier route '{other}' (that "
                                    "one wins)", route.id))
        seen.add(route.id, form)
    findings.extend(_declarations(rules))
    return findings


def _keys(conjunction: Conjunction) -> frozenset[str]:
    return frozenset(a[0] for a in conjunction)


class _Earlier:
    """The conjunctions of the routes seen so far, indexed by the keys they read: an earlier
    conjunction can only imply a later one whose keys include all of its own, and only
    overlap one that shares a key (so a few hundred routes lint in well under a second)."""

    def __init__(self) -> None:
        self.by_key: dict[str, list[tuple[int, str, Conjunction, frozenset[str]]]] = {}
        self.unconditional: list[str] = []  # routes with an empty conjunction (always true)
        self.count = 0

    def add(self, route: str, form: list[Conjunction]) -> None:
        for conjunction in form:
            keys = _keys(conjunction)
            if not keys:
                self.unconditional.append(route)
            for key in keys:
                self.by_key.setdefault(key, []).append((self.count, route, conjunction, keys))
            self.count += 1

    def _sharing(self, conjunction: Conjunction) -> list[tuple[int, str, Conjunction,
                                                              frozenset[str]]]:
        found: dict[int, tuple[int, str, Conjunction, frozenset[str]]] = {}
        for key in _keys(conjunction):
            for entry in self.by_key.get(key, ()):
                found[entry[0]] = entry
        return [found[i] for i in sorted(found)]

    def shadowing(self, form: list[Conjunction]) -> list[str] | None:
        names: list[str] = []
        for conjunction in form:
            keys = _keys(conjunction)
            hit = self.unconditional[0] if self.unconditional else next(
                (route for _, route, earlier, earlier_keys in self._sharing(conjunction)
                 if earlier_keys <= keys and conj_implies(conjunction, earlier)), None)
            if hit is None:
                return None
            if hit not in names:
                names.append(hit)
        return names

    def overlapping(self, form: list[Conjunction]) -> list[str]:
        names: list[str] = []
        for conjunction in form:
            for _, route, earlier, _ in self._sharing(conjunction):
                if route not in names and _overlap([conjunction], [earlier]):
                    names.append(route)
        return names


def _overlap(form: list[Conjunction], other: list[Conjunction]) -> bool:
    """Some messages match both: a pair of conjunctions that can hold together, with different
    atoms on one key where one implies the other (`x in [a, b]` after `x == a`)."""
    for a in form:
        for b in other:
            # Related but different atoms on one key (`in [a, b]` and `== a`, `>= 2` and
            # `> 5`): the same atom in both (`channel == 'email'`) alone says little. Each
            # conjunction is consistent alone (checked before): only pairs across them clash.
            if any(p[0] == q[0] and p != q and p[1] != "opaque" and (
                    implies(p, q) or implies(q, p)) for p in a for q in b) and not any(
                    contradicts(p, q) or contradicts(q, p) for p in a for q in b):
                return True
    return False


def _declarations(rules: RuleSet) -> list[Finding]:
    config = rules.config
    findings: list[Finding] = []
    used: dict[str, set[str]] = {"desks": set(), "skill_groups": set(), "sla_policies": set(),
                                 "escalations": set(), "categories": set(), "calendars": set()}
    targets: list[tuple[str, int | None, Target]] = [
        (r.id, i, r) for i, r in enumerate(config.routes)]
    targets.append(("default", None, config.default_route))
    for route_id, i, target in targets:
        loc = ("routes", i) if i is not None else ("default_route",)
        items: Sequence[Delivery | Target] = target.deliveries or [target]
        for j, item in enumerate(items):
            if item.desk is None:
                continue
            used["desks"].add(item.desk)
            group, satisfied = resolve_group(config, item.desk, item.skill_group, item.skills)
            if group:
                used["skill_groups"].add(group)
            if not satisfied:
                findings.append(Finding(
                    "warning", "skills-unsatisfied", (*loc, "deliveries", j) if target.deliveries
                    else loc, f"no group of desk '{item.desk}' has skills {item.skills}; the "
                    f"desk's default group ({group}) takes it", route_id))
        for name, section in (("sla", "sla_policies"), ("escalation", "escalations"),
                              ("category", "categories")):
            if getattr(target, name):
                used[section].add(getattr(target, name))
    for desk in config.desks:
        if desk.default_skill_group:
            used["skill_groups"].add(desk.default_skill_group)
        if desk.sla_policy:
            used["sla_policies"].add(desk.sla_policy)
    for category in config.categories:
        if category.sla_policy:
            used["sla_policies"].add(category.sla_policy)
        if desk.calendar:
            used["calendars"].add(desk.calendar)
    for calendar in [p.calendar for p in config.sla_policies] + [
            e.calendar for e in config.escalations]:
        if calendar is not None:
            used["calendars"].add(calendar)
    for escalation in config.escalations:
        for step in escalation.steps:
            if step.target:
                used["desks"].add(step.target.desk)
                if step.target.skill_group:
                    used["skill_groups"].add(step.target.skill_group)
    for route in rules.routes:
        if route.tree is not None:
            _calls(route.tree, used["calendars"])
    for section, names in used.items():
        for i, entry in enumerate(getattr(config, section)):
            if entry.id not in names:
                findings.append(Finding("warning", "unused", (section, i, "id"),
                                        f"{SINGULAR[section]} '{entry.id}' is "
                                        "not used by any route", None))
    year = (datetime.now(UTC)).year
    for i, spec in enumerate(config.calendars):
        warning = coverage_warning(spec, {year, year + 1})
        if warning:
            findings.append(Finding("warning", "calendar-coverage", ("calendars", i), warning))
    return findings


def _calls(node: Node, calendars: set[str]) -> None:
    if node.kind == "call" and node.children and node.children[0].kind == "literal" \
            and node.value not in ("lower", "len"):
        calendars.add(str(node.children[0].value))
    for child in node.children:
        _calls(child, calendars)
