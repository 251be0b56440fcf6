"""Field paths: a dotted path checked against the message model, and compiled into a reader."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from intake.message import Message

Reader = Callable[[Message], Any]


class _Missing:
    """A path that leads nowhere in the message (as opposed to a field that is null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


ATTR, EACH, INDEX, FREE = range(4)
# (how to take the step, attribute or key, list index when the segment is a number):
# ATTR reads a model's attribute, EACH the attribute of every model in a list (fan-out),
# INDEX one element of a list, FREE a key of a free-form object (`form.fields`, `channel_data`).
Step = tuple[int, str, int | None]


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else Any
    return tp


def resolve_path(path: str) -> tuple[tuple[Step, ...], str | None]:
    """Check a dotted path against the message model; return its steps or the problem.

    Lists fan out (`sender.identities.kind` reads the kind of every identity) unless the
    segment is a number (`attachments.0.size`); free-form objects (`form.fields`,
    `channel_data`, `event.data`) accept any key.
    """
    parts = path.split(".")
    if parts[0] == "route":
        return (), "'route' is what the router writes; rules cannot read it"
    steps: list[Step] = []
    tp: Any = Message
    free = False
    for depth, part in enumerate(parts):
        index = int(part) if part.isdigit() else None
        if free:
            steps.append((FREE, part, index))
            continue
        tp = _unwrap_optional(tp)
        fan_out = False
        if typing.get_origin(tp) is list:
            tp = _unwrap_optional(typing.get_args(tp)[0])
            if index is not None:
                steps.append((INDEX, part, index))
                continue
            fan_out = True
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            names = {(info.alias or name): name for name, info in tp.model_fields.items()}
            names.update({name: name for name in tp.model_fields})
            if part not in names:
                known = ", ".join(sorted(k for k in names if not k.endswith("_")
                                         and k not in ("route", "schema_version")))
                where = ".".join(parts[:depth]) or "the message"
                return (), f"'{part}' is not a field of {where} (fields: {known})"
            steps.append((EACH if fan_out else ATTR, names[part], None))
            tp = tp.model_fields[names[part]].annotation
        elif not fan_out and (tp is Any or tp is dict or typing.get_origin(tp) is dict):
            free = True
            steps.append((FREE, part, index))
        else:
            return (), f"'{'.'.join(parts[:depth])}' has no field '{part}'"
    return tuple(steps), None


def _flat(values: Any) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if value is None or value is MISSING:
            continue
        if type(value) is list:
            out.extend(value)
        else:
            out.append(value)
    return out


def _free_step(value: Any, key: str, index: int | None) -> Any:
    if type(value) is dict:
        return value.get(key, MISSING)
    if type(value) is list:
        if index is not None:
            return value[index] if index < len(value) else MISSING
        return _flat(_free_step(item, key, None) for item in value)
    return MISSING


def reader(steps: tuple[Step, ...]) -> Reader:
    """A closure reading one path; MISSING when it leads nowhere, None when a field is null."""
    if len(steps) == 1 and steps[0][0] == ATTR:
        attr = steps[0][1]

        def read_top(message: Message) -> Any:
            return getattr(message, attr)

        return read_top

    def read(message: Message) -> Any:
        value: Any = message
        for how, key, index in steps:
            if value is None or value is MISSING:
                return value
            if how == ATTR:
                value = getattr(value, key)
            elif how == FREE:
                value = _free_step(value, key, index)
            elif how == EACH:
                value = _flat(getattr(item, key) for item in value)
            else:
                value = value[index] if index is not None and index < len(value) else MISSING
        return value

    return read
