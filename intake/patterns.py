"""Patterns from the config (rule conditions, form fields, subject tags) on RE2: linear in the text.

CPython's `re` backtracks: `.*refund.*order` over ten thousand characters of `refund refund …`
takes seconds, on the event loop, for every message behind it. RE2 guarantees time linear in the
text, so a customer's message cannot make a rule slow. What RE2 cannot run (backreferences,
lookaround) is refused at load with RE2's own reason and a hint.

`compile_pattern` returns google-re2's `re`-like object. `Pattern` and `PatternSet` are what the
hot paths use: they answer only "does it hold", through the binding's `RE2`/`Set` objects (the
`re`-like wrapper builds a generator, a span table and a match object per call: about five times
the cost). google-re2 is pinned in pyproject.toml; tests/unit/test_patterns.py pins what these
rely on.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import re2
from re2 import _re2  # the pybind11 binding under google-re2's `re`-like wrapper

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print every refused pattern to stderr; we raise instead
# For yes/no answers: no capture groups to fill, so RE2 may answer from its DFA alone, and
# patterns that name the same group can still be joined.
_TEST_OPTIONS = re2.Options()
_TEST_OPTIONS.log_errors = False
_TEST_OPTIONS.never_capture = True
_UNANCHORED = _re2.RE2.Anchor.UNANCHORED
_ANCHOR_BOTH = _re2.RE2.Anchor.ANCHOR_BOTH
_NO_MATCH = -1

# What people coming from Python's `re` write and RE2 refuses: RE2's reason, then how to say it.
_HINT_TEXTS = (
    (r"invalid escape sequence: \\[1-9]|invalid perl operator: \(\?P$",
     "backreferences are not supported: they cannot run in time linear in the text"),
    (r"invalid perl operator: \(\?(=|!|<=|<!)",
     "lookahead and lookbehind assertions are not supported"),
    (r"invalid perl operator: \(\?\(", "conditional groups are not supported"),
    (r"bad repetition operator: .\+",
     "possessive quantifiers are not needed: RE2 never backtracks, write `a+` for `a++`"),
    (r"invalid perl operator: \(\?>",
     "atomic groups are not needed: RE2 never backtracks, write `(?:...)`"),
    (r"invalid escape sequence: \\Z", "write `\\z` for the end of the text"),
    (r"invalid escape sequence: \\u", "write a code point as `\\x{4e00}`"),
    (r"invalid perl operator: \(\?[a-zA-OQ-Z]",
     "the flags RE2 knows are i, m, s and U, e.g. `(?i)`"),
    (r"invalid perl operator: \(\?#", "comments `(?#...)` are not supported"),
)
_HINTS = tuple((re.compile(found), hint) for found, hint in _HINT_TEXTS)


class PatternInvalid(ValueError):
    """A pattern RE2 cannot compile; the message is RE2's reason, e.g. `invalid perl operator`."""


def _reason(error: Any) -> str:
    detail = error.args[0] if isinstance(error, Exception) and error.args else error
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    reason = str(detail)
    for found, hint in _HINTS:
        if found.search(reason):
            return f"{reason} ({hint})"
    return reason


def _utf8_pattern(pattern: str) -> bytes:
    try:
        return pattern.encode("utf-8")
    except UnicodeEncodeError:
        raise PatternInvalid("not a pattern RE2 can run: it holds a lone surrogate") from None


def compile_pattern(pattern: str) -> Any:
    """Compile `pattern` with RE2 (the `re`-like object `re2` returns), or raise PatternInvalid."""
    _utf8_pattern(pattern)
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        raise PatternInvalid(f"not a pattern RE2 can run: {_reason(exc)}") from None


def _binding(pattern: str) -> Any:
    compiled = _re2.RE2(_utf8_pattern(pattern), _TEST_OPTIONS)
    if not compiled.ok():
        raise PatternInvalid(f"not a pattern RE2 can run: {_reason(compiled.error())}")
    return compiled


# The router tests one subject against many routes' patterns: encode it once, not per route.
# A strong reference to the text keeps its identity from being reused while it is cached; one
# tuple is assigned at once, so a thread reading it sees a matching pair.
_last_encoded: tuple[str, int, bytes] = ("", 0, b"")


def literal(text: str) -> str:
    """A pattern found exactly where `text` is (every metacharacter escaped)."""
    escaped: str = re2.escape(text)
    return escaped


def utf8_prefix(text: str, max_chars: int | None = None) -> bytes:
    """The first `max_chars` characters of `text` as UTF-8 (what RE2 reads).

    A lone surrogate (possible in JSON text) becomes `?` rather than an error.
    """
    global _last_encoded
    last = _last_encoded
    limit = max_chars if max_chars is not None else -1
    if last[0] is text and last[1] == limit:
        return last[2]
    cut = text if max_chars is None or len(text) <= max_chars else text[:max_chars]
    data = cut.encode("utf-8", "replace")
    _last_encoded = (text, limit, data)
    return data


# Plain text, or plain texts separated by `|` (`订单|order`): no character RE2 reads specially.
_LITERALS = re.compile(r"[^\\^$.|?*+()\[\]{}]+(\|[^\\^$.|?*+()\[\]{}]+)*")


class Pattern:
    """A config pattern compiled for yes/no tests: `search` (found anywhere) and `fullmatch`.

    A pattern that is plain text or plain alternatives (`订单|order`, common in rules) is
    answered by Python's substring search: the same answer, without a call into RE2 (whose
    binding costs several times a short search).
    """

    __slots__ = ("_literals", "_match", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._match = _binding(text).Match
        self._literals = tuple(text.split("|")) if _LITERALS.fullmatch(text) else None

    def search(self, text: str, max_chars: int | None = None) -> bool:
        """Whether the pattern is found in `text` (its first `max_chars` characters, as if
        they were all of it: `$` holds where the read stops)."""
        literals = self._literals
        if literals is not None:
            cut = text if max_chars is None or len(text) <= max_chars else text[:max_chars]
            for literal in literals:
                if literal in cut:
                    return True
            return False
        data = utf8_prefix(text, max_chars)
        return bool(self._match(_UNANCHORED, data, 0, len(data))[0][0] != _NO_MATCH)

    def fullmatch(self, text: str) -> bool:
        """Whether the whole of `text` matches the pattern."""
        if self._literals is not None:
            return text in self._literals
        data = utf8_prefix(text)
        return bool(self._match(_ANCHOR_BOTH, data, 0, len(data))[0][0] != _NO_MATCH)

    def __repr__(self) -> str:
        return f"Pattern({self.text!r})"


@functools.lru_cache(maxsize=4096)
def compiled(text: str) -> Pattern:
    """`Pattern(text)`, compiled once: validating the config, compiling the rules and every
    reload of an unchanged pattern share it (a Pattern is immutable and RE2 is thread-safe)."""
    return Pattern(text)


class PatternSet:
    """Several patterns searched at once: which of them are found in a text.

    `which` is exact when it names patterns. An empty answer may also mean that RE2's DFA ran
    out of memory on this text (RE2::Set has no slower fallback): use `any` to rule all out.
    """

    __slots__ = ("_any", "_which", "patterns")

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns = tuple(patterns)
        # Flags stay inside each alternative in RE2: `(?:(?i)a)|(?:b)` ignores case for `a` only.
        self._any = _binding("|".join(f"(?:{p})" for p in self.patterns)).Match
        regexps = _re2.Set(_UNANCHORED, _TEST_OPTIONS)
        for pattern in self.patterns:
            if regexps.Add(_utf8_pattern(pattern)) < 0:
                raise PatternInvalid(f"not a pattern RE2 can run: {pattern}")
        if not regexps.Compile():
            raise PatternInvalid("RE2 could not compile the set of patterns")
        self._which = regexps.Match

    def any(self, text: str, max_chars: int | None = None) -> bool:
        """Whether any pattern is found (exact: RE2 falls back from its DFA when it must)."""
        data = utf8_prefix(text, max_chars)
        return bool(self._any(_UNANCHORED, data, 0, len(data))[0][0] != _NO_MATCH)

    def which(self, text: str, max_chars: int | None = None) -> list[int]:
        """The indices of the patterns found, in order; [] for none or for "cannot tell"."""
        found: list[int] = self._which(utf8_prefix(text, max_chars))
        found.sort()
        return found
