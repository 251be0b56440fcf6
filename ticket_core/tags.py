"""Ticket tags: one spelling per tag, and the `ticket_tags` rows that make `?tag=` indexed.

A tag is trimmed, NFKC-normalised (full-width `ＶＩＰ` is `vip`), its inner white space folded
to one space, its Latin letters case-folded (`VIP` is `vip`; Chinese is left as written), and
at most 50 characters; a ticket has at most 30. `tickets.tags` keeps the list as shown;
`ticket_tags` holds one row per (ticket, tag) for the list filter.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

MAX_TAG_CHARS = 50
MAX_TAGS = 30
_SPACES = re.compile(r"\s+")


class TagsInvalid(ValueError):
    """Tags that cannot be written: `problems` maps the request key to a message."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))
        self.problems = problems


def _fold(char: str) -> str:
    return char.casefold() if unicodedata.name(char, "").startswith("LATIN") else char


def normalize_tag(value: Any) -> str:
    """The tag's one spelling, or ValueError saying why it cannot be one."""
    if not isinstance(value, str):
        raise ValueError("a tag is text")
    text = _SPACES.sub(" ", unicodedata.normalize("NFKC", value)).strip()
    if not text:
        raise ValueError("a tag cannot be empty")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in text):
        raise ValueError("a tag cannot hold control or unassigned characters")
    text = "".join(_fold(c) for c in text)
    if len(text) > MAX_TAG_CHARS:
        raise ValueError(f"a tag has at most {MAX_TAG_CHARS} characters")
    return text


def normalize_tags(values: Iterable[Any], key: str = "tags") -> list[str]:
    """Each tag's spelling, duplicates dropped, in the order given; TagsInvalid names the
    position of each bad one."""
    tags: list[str] = []
    problems: dict[str, str] = {}
    for i, value in enumerate(values):
        try:
            tag = normalize_tag(value)
        except ValueError as exc:
            problems[f"{key}.{i}"] = str(exc)
            continue
        if tag not in tags:
            tags.append(tag)
    if problems:
        raise TagsInvalid(problems)
    return tags


def lenient_tags(values: Iterable[Any]) -> list[str]:
    """The routing decision's tags: each that can be a tag, the first 30 (a rule's typo never
    fails a message)."""
    tags: list[str] = []
    for value in values:
        try:
            tag = normalize_tag(value)
        except ValueError:
            continue
        if tag not in tags and len(tags) < MAX_TAGS:
            tags.append(tag)
    return tags


def tag_rows(ticket_id: str, tags: Iterable[str]) -> list[dict[str, Any]]:
    return [{"ticket_id": ticket_id, "tag": tag} for tag in tags]
