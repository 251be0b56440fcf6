"""Custom ticket and customer fields: their definitions (`tickets.ticket_fields`,
`tickets.customer_fields`) and the validation of every value written.

A value is checked against its field's type and stored in one canonical JSON form:

| type | the API takes | stored as |
| --- | --- | --- |
| `text`, `textarea` | a string (trimmed; `min`/`max`: its length) | the string |
| `number` | a JSON integer (`min`/`max`) | the integer |
| `decimal` | a string (`"1299.50"`) or a JSON integer; never a JSON float | a string, exact |
| `date` | `YYYY-MM-DD`, a real day (`2026-02-30` is refused) | the same string |
| `datetime` | ISO 8601 with an offset | UTC, `2026-10-01T01:00:00Z` |
| `select` | one option's value | the value |
| `multiselect` | a list of option values (`min`/`max`: how many) | in the options' order |
| `checkbox` | `true` or `false` | the boolean |
| `email` | an address | its domain lower-cased |
| `phone` | a number; national ones in `tickets.default_phone_region` | E.164 |
| `url` | an `http(s)://` URL | the string |

`null` (or an empty string or list) removes a value. A stored value the config no longer
accepts (its option or field dropped, or the field moved to other desks) stays readable,
shown as `{"value": …, "stale": true}`, and is refused when written again.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from intake.config import ConfigPattern
from intake.fields import clean_email, clean_phone, clean_text
from intake.patterns import compiled

FieldType = Literal["text", "textarea", "number", "decimal", "date", "datetime", "select",
                    "multiselect", "checkbox", "email", "phone", "url"]
Required = Literal["on_create", "on_resolve"]

MAX_TEXT = 1_000
MAX_TEXTAREA = 10_000
MAX_URL = 2_048
MAX_DECIMAL_DIGITS = 30
# JavaScript clients read JSON numbers as doubles: integers beyond this lose digits there.
MAX_SAFE_INTEGER = 2**53 - 1
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_BOUNDED = ("text", "textarea", "number", "decimal", "date", "datetime", "multiselect")
_PATTERNED = ("text", "textarea", "email", "phone", "url")
# Keys of the PATCH bodies: a 422 names a field's problem by its key, so none may be one.
RESERVED_KEYS = frozenset({"status", "category", "tags", "add_tags", "remove_tags", "fields",
                           "name", "vip_level", "language", "body"})


def _option(value: Any) -> Any:
    # `options: [normal, vip]`: a bare value is its own label.
    return {"value": value, "label": value} if isinstance(value, str | int) else value


class FieldOption(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    value: str = Field(min_length=1, max_length=100)
    label: str = Field(min_length=1, max_length=200)


class FieldDefinition(BaseModel):
    """One custom field of `tickets.ticket_fields` or `tickets.customer_fields`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    label: str = Field(min_length=1, max_length=200)
    type: FieldType
    required: Required | None = None
    options: list[Annotated[FieldOption, BeforeValidator(_option)]] | None = None
    pattern: ConfigPattern | None = None
    min: Any = None
    max: Any = None
    desks: list[str] = Field(default_factory=list)  # empty: every desk

    @model_validator(mode="after")
    def consistent(self) -> FieldDefinition:
        if self.key in RESERVED_KEYS:
            raise ValueError(f"key '{self.key}' names a key of the API's bodies; choose another")
        if self.type in ("select", "multiselect"):
            if not self.options:
                raise ValueError(f"a {self.type} field needs options (value and label)")
            values = [o.value for o in self.options]
            if len(set(values)) != len(values):
                raise ValueError("options: a value is listed twice")
        elif self.options is not None:
            raise ValueError(f"options belong to select and multiselect fields, not {self.type}")
        if self.pattern is not None and self.type not in _PATTERNED:
            raise ValueError(f"pattern does not apply to a {self.type} field")
        for name in ("min", "max"):
            if getattr(self, name) is not None:
                if self.type not in _BOUNDED:
                    raise ValueError(f"{name} does not apply to a {self.type} field")
                object.__setattr__(self, name, self._bound(name, getattr(self, name)))
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is greater than max")
        return self

    def _bound(self, name: str, value: Any) -> Any:
        # Lengths and counts for text and multiselect; values for the others.
        if isinstance(value, bool):
            raise ValueError(f"{name}: not a bound")
        if self.type in ("text", "textarea", "multiselect", "number"):
            if not isinstance(value, int) or (value < 0 and self.type != "number"):
                raise ValueError(f"{name}: a whole number" + ("" if self.type == "number"
                                                              else " (a length or count)"))
            return value
        if self.type == "decimal":
            try:
                return Decimal(str(value))
            except InvalidOperation:
                raise ValueError(f"{name}: not a decimal number") from None
        if self.type == "date":
            return value if isinstance(value, date) and not isinstance(value, datetime) \
                else _date(str(value))
        return _datetime(value.isoformat() if isinstance(value, datetime) else str(value))

    def option_values(self) -> list[str]:
        return [o.value for o in self.options or []]

    def applies_to(self, desk: str | None) -> bool:
        return not self.desks or desk in self.desks


class FieldsInvalid(ValueError):
    """Values that cannot be written: `problems` maps each field's key to a message."""

    def __init__(self, problems: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))
        self.problems = problems


def _date(text: str) -> date:
    if not _DATE.fullmatch(text):
        raise ValueError("a date as YYYY-MM-DD, e.g. 2026-10-08")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text} is not a day of the calendar") from None


def _datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError("a date and time in ISO 8601 with its offset, e.g. "
                         "2026-10-08T09:30:00+08:00") from None
    if value.tzinfo is None:
        raise ValueError("needs a time zone offset (Z or +08:00)")
    return value.astimezone(UTC)


def _iso_utc(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _is_empty(value: Any) -> bool:
    return value is None or value == [] or (isinstance(value, str) and not value.strip())


def clean_value(field: FieldDefinition, value: Any, phone_region: str | None) -> Any:
    """The canonical stored form of `value` for `field`, or ValueError saying why not."""
    kind = field.type
    if kind in ("text", "textarea"):
        if not isinstance(value, str):
            raise ValueError("expected text")
        limit = field.max if field.max is not None else (
            MAX_TEXT if kind == "text" else MAX_TEXTAREA)
        text = clean_text(value, max_chars=limit, multiline=kind == "textarea")
        if field.min is not None and len(text) < field.min:
            raise ValueError(f"use at least {field.min} characters")
        return _matching(field, text)
    if kind == "number":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("expected a whole number (a JSON integer)")
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError(f"at most {MAX_SAFE_INTEGER} either side of zero")
        return _in_range(field, value, value)
    if kind == "decimal":
        return _decimal(field, value)
    if kind == "date":
        if not isinstance(value, str):
            raise ValueError("a date as YYYY-MM-DD, e.g. 2026-10-08")
        day = _date(value.strip())
        return _in_range(field, day, day.isoformat())
    if kind == "datetime":
        if not isinstance(value, str):
            raise ValueError("a date and time in ISO 8601 with its offset")
        moment = _datetime(value.strip())
        return _in_range(field, moment, _iso_utc(moment))
    if kind == "select":
        if not isinstance(value, str) or value not in field.option_values():
            raise ValueError("not an option; choose one of " + ", ".join(field.option_values()))
        return value
    if kind == "multiselect":
        return _multiselect(field, value)
    if kind == "checkbox":
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if not isinstance(value, str):
        raise ValueError("expected text")
    text = value.strip()
    if kind == "email":
        return _matching(field, clean_email(text))
    if kind == "phone":
        return _matching(field, clean_phone(text, phone_region))
    return _matching(field, _url(text))


def _matching(field: FieldDefinition, text: str) -> str:
    if field.pattern is not None and not compiled(field.pattern).fullmatch(text):
        raise ValueError(f"not in the expected format ({field.pattern})")
    return text


def _in_range(field: FieldDefinition, value: Any, stored: Any) -> Any:
    if field.min is not None and value < field.min:
        raise ValueError(f"at least {field.min}")
    if field.max is not None and value > field.max:
        raise ValueError(f"at most {field.max}")
    return stored


def _decimal(field: FieldDefinition, value: Any) -> str:
    if isinstance(value, float):
        raise ValueError('send a decimal as a string, e.g. "1299.50" (a JSON float is '
                         "not exact)")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError('expected a decimal number as a string, e.g. "1299.50"')
    text = str(value).strip()
    if not re.fullmatch(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)", text):
        raise ValueError('expected a decimal number such as "1299.50"')
    number = Decimal(text)
    if len(number.as_tuple().digits) > MAX_DECIMAL_DIGITS:
        raise ValueError(f"at most {MAX_DECIMAL_DIGITS} digits")
    return str(_in_range(field, number, format(number, "f")))


def _multiselect(field: FieldDefinition, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of option values")
    options = field.option_values()
    unknown = [v for v in value if v not in options]
    if unknown:
        raise ValueError(f"not an option: {', '.join(unknown)}; choose from "
                         + ", ".join(options))
    chosen = [o for o in options if o in value]
    if field.min is not None and len(chosen) < field.min:
        raise ValueError(f"choose at least {field.min}")
    if field.max is not None and len(chosen) > field.max:
        raise ValueError(f"choose at most {field.max}")
    return chosen


def _url(text: str) -> str:
    if len(text) > MAX_URL or any(c.isspace() or ord(c) < 32 for c in text):
        raise ValueError(f"a URL without spaces, at most {MAX_URL} characters")
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not host:
        raise ValueError("an http:// or https:// URL, e.g. https://shop.example/orders/1")
    return text


class FieldSet:
    """The definitions of one kind (ticket or customer fields), by key."""

    def __init__(self, definitions: list[FieldDefinition] | None,
                 phone_region: str | None = None) -> None:
        # None: not configured (customer fields before the agent workflow: free-form).
        self.free_form = definitions is None
        self.definitions = {d.key: d for d in definitions or []}
        self.phone_region = phone_region

    def for_desk(self, desk: str | None) -> dict[str, FieldDefinition]:
        return {k: d for k, d in self.definitions.items() if d.applies_to(desk)}

    def merge(self, stored: dict[str, Any] | None, given: dict[str, Any], *,
              desk: str | None = None, creating: bool = False) -> dict[str, Any]:
        """The stored values with `given` written over them (null removes a value); raise
        FieldsInvalid naming each value at fault, and each `required: on_create` field
        missing when `creating`."""
        merged = dict(stored or {})
        if self.free_form:
            for key, value in given.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            return merged
        fields = self.for_desk(desk)
        problems: dict[str, str] = {}
        for key, value in given.items():
            field = fields.get(key)
            if _is_empty(value):
                if field is None and key not in merged:
                    problems[key] = self._unknown(key, desk)
                merged.pop(key, None)
                continue
            if field is None:
                problems[key] = self._unknown(key, desk)
                continue
            try:
                merged[key] = clean_value(field, value, self.phone_region)
            except ValueError as exc:
                problems[key] = str(exc)
        if creating:
            for key, field in fields.items():
                if field.required == "on_create" and _missing(field, merged.get(key)) \
                        and key not in problems:
                    problems[key] = "required"
        if problems:
            raise FieldsInvalid(problems)
        return merged

    def _unknown(self, key: str, desk: str | None) -> str:
        if key in self.definitions:
            return f"not a field of desk {desk}"
        known = ", ".join(sorted(self.definitions)) or "none"
        return f"unknown field (known: {known})"

    def is_stale(self, key: str, value: Any, desk: str | None = None) -> bool:
        """Whether a stored value is one the config would not accept now."""
        if self.free_form:
            return False
        field = self.for_desk(desk).get(key)
        if field is None:
            return True
        try:
            return bool(clean_value(field, value, self.phone_region) != value)
        except ValueError:
            return True

    def shown(self, stored: dict[str, Any] | None, desk: str | None = None) -> dict[str, Any]:
        """The values as the API shows them: a stale one as `{"value", "stale": true}`."""
        return {key: {"value": value, "stale": True} if self.is_stale(key, value, desk)
                else value for key, value in (stored or {}).items()}

    def missing_on_resolve(self, desk: str | None, stored: dict[str, Any] | None) -> list[str]:
        """Keys of the desk's `required: on_resolve` fields without a current value."""
        values = stored or {}
        return [key for key, field in self.for_desk(desk).items()
                if field.required == "on_resolve" and (
                    _missing(field, values.get(key)) or self.is_stale(key, values[key], desk))]


def _missing(field: FieldDefinition, value: Any) -> bool:
    # A required checkbox is one that must be ticked (a confirmation), as on the web form.
    return _is_empty(value) or (field.type == "checkbox" and value is not True)


class FieldsRequired(ValueError):
    """A resolution without the desk's `required: on_resolve` fields: their keys."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(", ".join(keys))
        self.keys = keys


def missing_on_resolve(ticket: Any, field_set: FieldSet) -> list[str]:
    """The keys of `required: on_resolve` fields of the ticket's desk that have no current
    value (`ticket`: a row or a view with `desk` and `fields`; a stale value counts as none)."""
    stored = getattr(ticket, "fields", None) or {}
    plain = {k: v["value"] if isinstance(v, dict) and v.get("stale") else v
             for k, v in stored.items()}
    return field_set.missing_on_resolve(getattr(ticket, "desk", None), plain)
