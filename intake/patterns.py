"""Patterns from the config (rule conditions, form fields, subject tags) on RE2: linear in the text.

CPython's `re` backtracks: `.*refund.*order` over ten thousand characters of `refund refund …`
takes seconds, on the event loop, for every message behind it. RE2 guarantees time linear in the
text, so a customer's message cannot make a rule slow. What RE2 cannot run (backreferences,
lookaround) is refused at load with RE2's own reason.
"""

from __future__ import annotations

from typing import Any

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print every refused pattern to stderr; we raise instead


class PatternInvalid(ValueError):
    """A pattern RE2 cannot compile; the message is RE2's reason, e.g. `invalid perl operator`."""


def compile_pattern(pattern: str) -> Any:
    """Compile `pattern` with RE2 (the `re`-like object `re2` returns), or raise PatternInvalid."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise PatternInvalid(f"not a pattern RE2 can run: {detail}") from None
