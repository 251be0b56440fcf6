"""`{{placeholders}}` in quick replies, auto replies and satisfaction requests.

One small renderer instead of a template engine: the texts come from the config and from
supervisors, the values from customers, so a value is never read as a template again (a
customer named `{{agent.name}}` stays that), nothing is evaluated, and a placeholder with no
value and no default is an error naming it, never "您好 " with a hole in it.

    {{customer.name}}                   a value
    {{customer.name | default: "您"}}   a value, else the fallback (or 'single quotes')
    {{input.tracking_no}}               asked of the agent when the text is used

Names: `customer.name`, `customer.fields.<key>`, `agent.name`, `ticket.number`,
`ticket.subject`, `ticket.fields.<key>`, `input.<name>`, `satisfaction.url`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

_NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*"
_PLACEHOLDER = re.compile(
    r"\{\{\s*(?P<name>" + _NAME + r")\s*"
    r"(?:\|\s*default:\s*(?:\"(?P<default>[^\"{}]*)\"|'(?P<single>[^'{}]*)')\s*)?\}\}")
_OPEN = "{{"

# Fixed names, and the prefixes whose last part is free (a field key, an input's name).
VARIABLES = frozenset({"customer.name", "agent.name", "ticket.number", "ticket.subject",
                       "satisfaction.url"})
PREFIXES = ("customer.fields.", "ticket.fields.", "input.")


class Unresolved(ValueError):
    """Placeholders with neither a value nor a default, in the order they appear."""

    def __init__(self, names: list[str]) -> None:
        super().__init__("no value for " + ", ".join(f"{{{{{name}}}}}" for name in names))
        self.names = names


@dataclass(frozen=True)
class Placeholder:
    name: str
    default: str | None


def placeholders(template: str) -> list[Placeholder]:
    """Every well-formed placeholder, in order."""
    return [Placeholder(m["name"], _default(m)) for m in _PLACEHOLDER.finditer(template)]


def _default(match: re.Match[str]) -> str | None:
    return match["default"] if match["default"] is not None else match["single"]


def problems(template: str, *, ticket_fields: Collection[str] | None = None,
             customer_fields: Collection[str] | None = None,
             unavailable: Collection[str] = ()) -> list[str]:
    """What `intake config check` reports for a text: a `{{` that opens no placeholder, a name
    that is no known variable or a field key the config does not define (when given), and one
    of `unavailable` (names, or prefixes such as `input.`: an auto reply has nobody to ask)."""
    found: list[str] = []
    stripped = _PLACEHOLDER.sub("", template)
    if _OPEN in stripped:
        snippet = stripped[stripped.index(_OPEN):][:40]
        found.append(f"malformed placeholder near {snippet!r} "
                     '(write {{name}} or {{name | default: "text"}})')
    for placeholder in placeholders(template):
        name = placeholder.name
        field = name.split(".", 2)[-1]
        if not known(name):
            found.append(f"{{{{{name}}}}} names no known variable (known: "
                         f"{', '.join(sorted(VARIABLES))}, "
                         f"{', '.join(p + '<key>' for p in PREFIXES)})")
        elif any(name == u or (u.endswith(".") and name.startswith(u)) for u in unavailable):
            found.append(f"{{{{{name}}}}} has no value here")
        elif (ticket_fields is not None and name.startswith("ticket.fields.")
              and field not in ticket_fields):
            found.append(f"{{{{{name}}}}}: no ticket field {field!r} in tickets.ticket_fields")
        elif (customer_fields is not None and name.startswith("customer.fields.")
              and field not in customer_fields):
            found.append(f"{{{{{name}}}}}: no customer field {field!r} in "
                         "tickets.customer_fields")
    return found


def known(name: str) -> bool:
    if name in VARIABLES:
        return True
    return any(name.startswith(prefix) and len(name) > len(prefix)
               and "." not in name[len(prefix):] for prefix in PREFIXES)


def render(template: str, values: Mapping[str, object | None]) -> str:
    """The text with every placeholder replaced in one pass; `Unresolved` names those with no
    value (absent, None or empty) and no default. Text that is not a placeholder is kept."""
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        value = values.get(match["name"])
        if value is not None and str(value) != "":
            return str(value)
        fallback = _default(match)
        if fallback is not None:
            return fallback
        if match["name"] not in missing:
            missing.append(match["name"])
        return ""

    text = _PLACEHOLDER.sub(replace, template)
    if missing:
        raise Unresolved(missing)
    return text

