"""The `when` tree compiled into closures, and the explanation of a false one.

Values compare as v1's `where` did (one set of rules for both notations): words as text (a
form's `'3'` equals `3`); `== null` holds for absent, null or an empty list; ordering compares
numbers (text of a number counts) numerically, two other texts by code point, anything else is
false; a path through a list holds when any element does.

The customer snapshot is not part of the message: `decide` binds it to `CUSTOMER` (a context
variable) for the time of one decision, so every closure still takes the message alone and
the channel index and pattern screens read messages as before.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel

from intake.calendars import WEEKDAYS, Calendar
from intake.message import Message
from intake.patterns import PatternInvalid, compiled

from .expr import CALENDAR_FUNCTIONS, Node
from .paths import MISSING, reader, resolve_path

# A `matches` reads at most this many characters of a text (v1's bound).
MATCH_MAX_CHARS = 10_000
SAW_MAX_CHARS = 200
SAW_MAX_ITEMS = 20
SAW_MAX_DEPTH = 8

Fn = Callable[[Message], Any]

CUSTOMER: ContextVar[Mapping[str, Any] | None] = ContextVar("router_customer", default=None)

IDENTITY_KEYS = {"sender.email": "email", "sender.phone": "phone",
                 "sender.wechat_openid": "wechat_openid",
                 "sender.wechat_unionid": "wechat_unionid", "sender.sdk_user": "sdk_user"}
CUSTOMER_KEYS = ("customer.known", "customer.id", "customer.vip_level", "customer.language",
                 "customer.tickets_count", "customer.open_tickets_count", "customer.lookup")


class ExprError(ValueError):
    """A `when` that parses but cannot compile: an unknown key, function, calendar or regex."""

    def __init__(self, code: str, message: str, position: int = 0, *,
                 sticky: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.position = position
        self.sticky = sticky  # raised for a route's `sticky_by`, not its `when`


# -- value semantics, shared with v1's `where` --

def number(value: Any) -> float | None:
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


def present(value: Any) -> bool:
    return value is not MISSING and value is not None and value != []


def as_word(value: Any) -> str:
    """How `==` and `in` compare a value with a word in the rules: as its text."""
    return value if type(value) is str else str(value)


def scalar_equals(operand: Any) -> Callable[[Any], bool]:
    """`value == operand` as the rules mean it: words compare as text, "3" equals 3."""
    if operand is None or operand is MISSING:
        return lambda v: not present(v)
    if isinstance(operand, bool):
        return lambda v: v is operand
    if isinstance(operand, int | float):
        return lambda v: number(v) == operand
    if isinstance(operand, str):
        return lambda v: v == operand if type(v) is str else present(v) and str(v) == operand
    return lambda v: v == operand


def any_of(predicate: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """Apply to a scalar, or to any element of a list (a fanned-out path or a list field)."""
    def holds(value: Any) -> bool:
        if value is MISSING or value is None:
            return False
        if type(value) is list:
            return any(predicate(v) for v in value)
        return predicate(value)

    return holds


def equals(operand: Any) -> Callable[[Any], bool]:
    if operand is None or operand is MISSING:
        return scalar_equals(None)
    return any_of(scalar_equals(operand))


def member_of(members: Any) -> Callable[[Any], bool]:
    items = members if isinstance(members, list | tuple) else [members]
    tests = [scalar_equals(m) for m in items if m is not None]
    has_null = None in items

    def holds(value: Any) -> bool:
        return any_of(lambda v: any(t(v) for t in tests))(value) or (has_null
                                                                      and not present(value))
    return holds


def contains(value: Any, operand: Any) -> bool:
    if type(value) is str:
        return isinstance(operand, str) and operand in value
    if type(value) is list or type(value) is dict:
        return operand in value
    return False


def has(value: Any, operand: Any) -> bool:
    if type(value) is list:
        test = scalar_equals(operand)
        return any(test(v) for v in value)
    return present(value) and scalar_equals(operand)(value)


def ordered(op: str) -> Callable[[Any, Any], bool]:
    compare: Callable[[Any, Any], bool] = {
        "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}[op]

    def one(a: Any, b: Any) -> bool:
        x, y = number(a), number(b)
        if x is not None and y is not None:
            return compare(x, y)
        if type(a) is str and type(b) is str:
            return compare(a, b)
        return False

    def holds(a: Any, b: Any) -> bool:
        if type(a) is list:
            return any(one(item, b) for item in a)
        return one(a, b)

    return holds


def saw_value(value: Any, depth: int = 0) -> Any:
    """A value as `saw` shows it: small and JSON-ready (texts cut at 200 characters, at most
    20 items and 8 levels: a hostile, deeply nested `form.fields` shows as `…` below that)."""
    if value is MISSING or value is None or isinstance(value, bool | int | float):
        return None if value is MISSING else value
    if isinstance(value, str):
        return value if len(value) <= SAW_MAX_CHARS else value[:SAW_MAX_CHARS] + "…"
    if depth >= SAW_MAX_DEPTH:
        return "…"
    if isinstance(value, list | tuple):
        return [saw_value(item, depth + 1) for item in value[:SAW_MAX_ITEMS]]
    if isinstance(value, BaseModel):
        return saw_value(value.model_dump(mode="json", exclude_none=True), depth)
    if isinstance(value, dict):
        return {str(k): saw_value(v, depth + 1) for k, v in list(value.items())[:SAW_MAX_ITEMS]}
    return str(value)


# -- keys --

def _model_paths(model: type[BaseModel], prefix: str, depth: int) -> list[str]:
    out: list[str] = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in ("route", "schema_version"):
            continue
        path = f"{prefix}{key}"
        out.append(path)
        tp = info.annotation
        for arg in (tp, *typing.get_args(tp)):
            for inner in (arg, *typing.get_args(arg)):
                if isinstance(inner, type) and issubclass(inner, BaseModel) and depth < 3:
                    out.extend(_model_paths(inner, path + ".", depth + 1))
    return out


KNOWN_KEYS = sorted({*_model_paths(Message, "", 1), *IDENTITY_KEYS, *CUSTOMER_KEYS,
                     "customer.fields", "form.fields"})


def _customer_reader(path: str) -> Fn:
    parts = path.split(".")[1:]

    def read(message: Message) -> Any:
        value: Any = CUSTOMER.get()
        if value is None:
            return MISSING
        for part in parts:
            if type(value) is dict or isinstance(value, Mapping):
                value = value.get(part, MISSING)
            else:
                return MISSING
            if value is MISSING or value is None:
                return value
        return value

    return read


def _identity_reader(kind: str) -> Fn:
    def read(message: Message) -> Any:
        for identity in message.sender.identities:
            if identity.kind == kind:
                return identity.value
        return None

    return read


def key_reader(path: str, position: int = 0) -> Fn:
    """The reader of one key; ExprError `unknown-key` (with a suggestion) when it is none."""
    if path in IDENTITY_KEYS:
        return _identity_reader(IDENTITY_KEYS[path])
    if path in CUSTOMER_KEYS or path.startswith("customer.fields."):
        return _customer_reader(path)
    steps, problem = resolve_path(path)
    if problem is None and not path.startswith("customer"):
        return reader(steps)
    close = difflib.get_close_matches(path, KNOWN_KEYS, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ExprError("unknown-key", f"unknown key '{path}'{hint}", position)


def reads_customer(node: Node) -> bool:
    if node.kind == "key":
        return str(node.value).startswith("customer.")
    return any(reads_customer(c) for c in node.children)


# -- compiling --

def compile_node(node: Node, calendars: Mapping[str, Calendar]) -> Fn:
    """A closure computing the node's value for a message (a bool for conditions)."""
    kind = node.kind
    if kind == "literal":
        value = node.value
        return lambda message: value
    if kind == "list":
        items = list(node.value)
        return lambda message: items
    if kind == "key":
        return key_reader(str(node.value), node.start)
    if kind == "call":
        return _compile_call(node, calendars)
    if kind == "exists":
        inner = compile_node(node.children[0], calendars)
        return lambda message: present(inner(message))
    if kind == "not":
        inner = compile_node(node.children[0], calendars)
        return lambda message: inner(message) is not True
    if kind in ("and", "or"):
        parts = tuple(compile_node(c, calendars) for c in node.children)
        if kind == "and":
            return lambda message: all(p(message) is True for p in parts)
        return lambda message: any(p(message) is True for p in parts)
    if kind == "compare":
        return _compile_compare(node, calendars)
    raise AssertionError(kind)  # pragma: no cover - the parser makes no other node


def _compile_compare(node: Node, calendars: Mapping[str, Calendar]) -> Fn:
    op = str(node.value)
    left_node, right_node = node.children
    left = compile_node(left_node, calendars)
    constant = right_node.kind in ("literal", "list")
    operand = right_node.value if right_node.kind == "literal" else (
        list(right_node.value) if right_node.kind == "list" else None)
    right = compile_node(right_node, calendars)
    if op in ("==", "!="):
        if not constant:
            def dynamic(message: Message) -> bool:
                holds = equals(right(message))(left(message))
                return holds if op == "==" else not holds
            return dynamic
        test = equals(operand)
        if op == "==" and isinstance(operand, str):
            def eq_text(message: Message) -> bool:
                value = left(message)
                return value == operand if type(value) is str else test(value)
            return eq_text
        if op == "==":
            return lambda message: test(left(message))
        return lambda message: not test(left(message))
    if op in ("in", "not in"):
        if constant:
            members = list(operand) if isinstance(operand, list) else [operand]
            member = member_of(members)
            words = frozenset(m for m in members if isinstance(m, str))
            if len(words) == len(members) and op == "in":
                def in_words(message: Message) -> bool:
                    value = left(message)
                    return value in words if type(value) is str else member(value)
                return in_words
            if op == "in":
                return lambda message: member(left(message))
            return lambda message: not member(left(message))

        def in_dynamic(message: Message) -> bool:
            holds = member_of(right(message))(left(message))
            return holds if op == "in" else not holds
        return in_dynamic
    if op == "contains":
        return lambda message: contains(left(message), right(message))
    if op == "has":
        return lambda message: has(left(message), right(message))
    if op == "matches":
        try:
            search = compiled(str(operand)).search
        except PatternInvalid as exc:
            raise ExprError("bad-regex", f"not a pattern RE2 can run: {exc}",
                            right_node.start) from exc

        def matches(message: Message) -> bool:
            value = left(message)
            if type(value) is str:
                return bool(search(value, MATCH_MAX_CHARS))
            if type(value) is list:
                return any(type(v) is str and search(v, MATCH_MAX_CHARS) for v in value)
            return False
        return matches
    order = ordered(op)
    return lambda message: order(left(message), right(message))


def _compile_call(node: Node, calendars: Mapping[str, Calendar]) -> Fn:
    name = str(node.value)
    if name in CALENDAR_FUNCTIONS:
        cal_id = str(node.children[0].value)
        if cal_id not in calendars:
            raise ExprError("unknown-calendar", f"unknown calendar '{cal_id}' (declared: "
                            f"{', '.join(sorted(calendars)) or 'none'})", node.children[0].start)
        cal = calendars[cal_id]
        # Every calendar function reads the message's received_at, never the router's clock.
        if name == "in_business_hours":
            return lambda message: cal.in_working_time(message.received_at)
        if name == "is_workday":
            return lambda message: cal.is_workday(cal.local_date(message.received_at))
        if name == "is_holiday":
            return lambda message: cal.is_holiday(cal.local_date(message.received_at))
        if name == "local_time":
            return lambda message: message.received_at.astimezone(cal.zone).strftime("%H:%M")
        if name == "local_weekday":
            return lambda message: WEEKDAYS[cal.local_date(message.received_at).weekday()]
        return lambda message: cal.local_date(message.received_at).isoformat()
    arg = compile_node(node.children[0], calendars)
    if name == "lower":
        def lower(message: Message) -> Any:
            value = arg(message)
            if type(value) is str:
                return value.lower()
            if type(value) is list:
                return [v.lower() if type(v) is str else v for v in value]
            return value
        return lower

    def length(message: Message) -> Any:
        value = arg(message)
        if value is MISSING or value is None:
            return 0
        return len(value) if isinstance(value, str | list | dict) else None
    return length


# -- explaining --

def failing_node(node: Node, fns: Mapping[int, Fn], message: Message) -> Node:
    """The first sub-expression that made `node` false: the first false operand of an `and`
    (recursively); an `or` whose operands all failed, a `not x` whose x held, a comparison
    or a call is itself the node."""
    if node.kind == "and":
        for child in node.children:
            if fns[id(child)](message) is not True:
                return failing_node(child, fns, message)
    return node


def saw_of(node: Node, fns: Mapping[int, Fn], message: Message) -> dict[str, Any]:
    """Each key and call inside the node, by its source text, with the value it read."""
    out: dict[str, Any] = {}

    def visit(n: Node) -> None:
        if n.kind in ("key", "call") and n.text not in out:
            out[n.text] = saw_value(fns[id(n)](message))
        if n.kind != "call":
            for child in n.children:
                visit(child)

    visit(node)
    return out


def compile_all(node: Node, calendars: Mapping[str, Calendar]) -> dict[int, Fn]:
    """A closure for every node of the tree (by node identity), for explanations."""
    fns: dict[int, Fn] = {}

    def visit(n: Node) -> None:
        if n.kind not in ("literal", "list"):
            fns[id(n)] = compile_node(n, calendars)
        for child in n.children:
            visit(child)

    visit(node)
    return fns
