"""The `when` language: tokens, a hand-written Pratt parser, one tree, and its printer.

Parsed once per revision; `router/evaluate.py` compiles the tree into closures. Nothing here
evaluates anything and nothing is ever passed to `eval`.

Precedence, loosest first: `or`, `and`, `not`, comparisons (`== != < <= > >= contains has in
not in matches`, postfix `exists`). Keywords are case-insensitive.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

KEYWORDS = frozenset({"and", "or", "not", "in", "contains", "has", "matches", "exists",
                      "true", "false", "null"})
COMPARISONS = ("==", "!=", "<=", ">=", "<", ">", "contains", "has", "in", "not in", "matches")
FUNCTIONS: dict[str, int] = {  # name -> arity
    "in_business_hours": 1, "is_workday": 1, "is_holiday": 1, "local_time": 1,
    "local_weekday": 1, "local_date": 1, "lower": 1, "len": 1,
}
CALENDAR_FUNCTIONS = frozenset({"in_business_hours", "is_workday", "is_holiday", "local_time",
                                "local_weekday", "local_date"})


class ParseError(ValueError):
    """A `when` that cannot be read; `position` is the 0-based offset in the source."""

    def __init__(self, message: str, position: int, source: str) -> None:
        super().__init__(f"{message} at column {position + 1}: {source!r}")
        self.reason = message
        self.position = position
        self.source = source


@dataclass(frozen=True, slots=True)
class Node:
    """A node of the tree; `text` is its source (outer parentheses and blanks removed)."""

    kind: str  # literal, list, key, call, compare, exists, not, and, or
    text: str
    value: Any = None  # literal: the value; key: the path; call: the name; compare: the op
    children: tuple[Node, ...] = field(default=())
    start: int = 0  # offset in the source, for errors


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")
  | (?P<number>-?\d+(?:\.\d+)?(?![\w.]))
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
  | (?P<name>[^\W\d][\w]*(?:\.[\w]+)*)
""", re.VERBOSE)

_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}


def unescape(body: str) -> str:
    """`\\\\ \\' \\" \\n \\t \\uXXXX`; any other backslash is kept (`\\bSF\\d{9}` stays as is)."""
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2:i + 6]):
                out.append(chr(int(body[i + 2:i + 6], 16)))
                i += 6
                continue
        out.append(ch)
        i += 1
    return "".join(out)


@dataclass(slots=True)
class _Token:
    kind: str  # string, number, op, name, keyword, end
    text: str
    start: int
    end: int


def tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(source):
        found = _TOKEN.match(source, pos)
        if not found:
            what = "an unclosed quote" if source[pos] in "'\"" else f"'{source[pos]}'"
            raise ParseError(f"unexpected {what}", pos, source)
        kind = found.lastgroup or ""
        if kind != "ws":
            text = found.group()
            if kind == "name" and text.lower() in KEYWORDS:
                kind, text = "keyword", text.lower()
            tokens.append(_Token(kind, text, found.start(), found.end()))
        pos = found.end()
    tokens.append(_Token("end", "", len(source), len(source)))
    return tokens


def clean_text(text: str) -> str:
    """Blanks and enclosing parentheses removed: `( a == 1 )` → `a == 1`."""
    text = text.strip()
    while text.startswith("(") and text.endswith(")") and _encloses(text):
        text = text[1:-1].strip()
    return text


def _encloses(text: str) -> bool:
    depth = 0
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0 and i != len(text) - 1:
                return False
        i += 1
    return True


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.i = 0

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def expect(self, text: str) -> _Token:
        token = self.peek()
        if token.text != text or token.kind not in ("op", "keyword"):
            raise ParseError(f"expected '{text}', found {_describe(token)}", token.start,
                             self.source)
        return self.take()

    def node(self, kind: str, start: int, end: int, value: Any = None,
             children: tuple[Node, ...] = ()) -> Node:
        return Node(kind, clean_text(self.source[start:end]), value, children, start)

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise ParseError("empty expression", 0, self.source)
        tree = self.parse_or()
        token = self.peek()
        if token.kind != "end":
            raise ParseError(f"unexpected {_describe(token)}", token.start, self.source)
        return tree

    def parse_or(self) -> Node:
        return self._chain("or", self.parse_and)

    def parse_and(self) -> Node:
        return self._chain("and", self.parse_not)

    def _chain(self, keyword: str, operand: Callable[[], Node]) -> Node:
        start = self.peek().start
        items = [operand()]
        while self.peek().kind == "keyword" and self.peek().text == keyword:
            self.take()
            items.append(operand())
        if len(items) == 1:
            return items[0]
        # `a and (b and c)` is one flat `and`: "the first false operand" reads as written.
        flat: list[Node] = []
        for item in items:
            flat.extend(item.children if item.kind == keyword else (item,))
        return self.node(keyword, start, self.tokens[self.i - 1].end, children=tuple(flat))

    def parse_not(self) -> Node:
        token = self.peek()
        if token.kind == "keyword" and token.text == "not":
            self.take()
            inner = self.parse_not()
            return self.node("not", token.start, self.tokens[self.i - 1].end,
                             children=(inner,))
        return self.parse_comparison()

    def parse_comparison(self) -> Node:
        start = self.peek().start
        left = self.parse_operand()
        token = self.peek()
        op: str | None = None
        if token.kind == "op" and token.text in ("==", "!=", "<", "<=", ">", ">="):
            op = token.text
        elif token.kind == "keyword" and token.text in ("contains", "has", "in", "matches"):
            op = token.text
        elif token.kind == "keyword" and token.text == "not" and self.peek(1).text == "in":
            self.take()
            op = "not in"
        elif token.kind == "keyword" and token.text == "exists":
            self.take()
            return self.node("exists", start, token.end, children=(left,))
        if op is None:
            return left
        self.take()
        right = self.parse_operand()
        if op == "matches" and not (right.kind == "literal" and isinstance(right.value, str)):
            raise ParseError("matches takes a pattern in quotes", right.start, self.source)
        if op in ("in", "not in") and right.kind not in ("list", "key", "call"):
            raise ParseError(f"'{op}' takes a list", right.start, self.source)
        return self.node("compare", start, self.tokens[self.i - 1].end, op, (left, right))

    def parse_operand(self) -> Node:
        token = self.take()
        if token.kind == "string":
            return Node("literal", token.text, unescape(token.text[1:-1]), start=token.start)
        if token.kind == "number":
            number = float(token.text) if "." in token.text else int(token.text)
            return Node("literal", token.text, number, start=token.start)
        if token.kind == "keyword" and token.text in ("true", "false", "null"):
            value = {"true": True, "false": False, "null": None}[token.text]
            return Node("literal", token.text, value, start=token.start)
        if token.kind == "op" and token.text == "(":
            inner = self.parse_or()
            close = self.expect(")")
            return Node(inner.kind, clean_text(self.source[token.start:close.end]),
                        inner.value, inner.children, token.start)
        if token.kind == "op" and token.text == "[":
            items: list[Node] = []
            while self.peek().text != "]":
                item = self.parse_operand()
                if item.kind != "literal":
                    raise ParseError("a list holds literals only", item.start, self.source)
                items.append(item)
                if self.peek().text != ",":
                    break
                self.take()
            close = self.expect("]")
            return self.node("list", token.start, close.end, tuple(i.value for i in items),
                             tuple(items))
        if token.kind == "name":
            if self.peek().kind == "op" and self.peek().text == "(":
                return self.parse_call(token)
            return Node("key", token.text, token.text, start=token.start)
        raise ParseError(f"expected a value, found {_describe(token)}", token.start,
                         self.source)

    def parse_call(self, name: _Token) -> Node:
        if name.text not in FUNCTIONS:
            raise ParseError(f"unknown function '{name.text}' (known: "
                             f"{', '.join(sorted(FUNCTIONS))})", name.start, self.source)
        self.expect("(")
        args: list[Node] = []
        while self.peek().text != ")":
            args.append(self.parse_or())
            if self.peek().text != ",":
                break
            self.take()
        close = self.expect(")")
        if len(args) != FUNCTIONS[name.text]:
            raise ParseError(f"{name.text}() takes {FUNCTIONS[name.text]} argument(s), got "
                             f"{len(args)}", name.start, self.source)
        if name.text in CALENDAR_FUNCTIONS and not (
                args[0].kind == "literal" and isinstance(args[0].value, str)):
            raise ParseError(f"{name.text}() takes a calendar id in quotes", args[0].start,
                             self.source)
        return self.node("call", name.start, close.end, name.text, tuple(args))


def _describe(token: _Token) -> str:
    return "the end" if token.kind == "end" else f"'{token.text}'"


def parse(source: str) -> Node:
    """The tree of one `when` expression; ParseError names the column."""
    return _Parser(source).parse()


# -- printing: the tree back as source (parse ∘ print is the identity on trees) --

_BINDING = {"or": 1, "and": 2, "not": 3, "compare": 4, "exists": 4}


def quote(value: str) -> str:
    """A text literal as the language writes it: single quotes, `\\` and `'` escaped."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return "'" + escaped.replace("\t", "\\t") + "'"


def literal_source(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(int(value)) if isinstance(value, float) and value.is_integer() \
            and abs(value) < 1e15 else repr(value)
    if isinstance(value, list | tuple | frozenset | set):
        return "[" + ", ".join(literal_source(v) for v in value) + "]"
    return quote(str(value))


def to_source(node: Node) -> str:
    """Print a tree; parentheses only where the precedence needs them."""
    kind = node.kind
    if kind == "literal":
        return literal_source(node.value)
    if kind == "list":
        return "[" + ", ".join(to_source(c) for c in node.children) + "]"
    if kind == "key":
        return str(node.value)
    if kind == "call":
        return f"{node.value}(" + ", ".join(to_source(c) for c in node.children) + ")"
    if kind == "exists":
        return f"{_operand(node.children[0])} exists"
    if kind == "compare":
        left, right = node.children
        return f"{_operand(left)} {node.value} {_operand(right)}"
    if kind == "not":
        inner = node.children[0]
        text = to_source(inner)
        return f"not {text}" if _BINDING.get(inner.kind, 5) >= 3 else f"not ({text})"
    joiner = f" {kind} "
    parts = []
    for child in node.children:
        text = to_source(child)
        # Same-kind chains print flat: `a and (b and c)` means `a and b and c`.
        parts.append(f"({text})" if _BINDING.get(child.kind, 5) < _BINDING[kind] else text)
    return joiner.join(parts)


def _operand(node: Node) -> str:
    text = to_source(node)
    return f"({text})" if node.kind in _BINDING else text
