"""Durations (`30s`, `15m`, `2h`, `1d`, `1h30m`, `50ms`) and percentages (`80%`) in the config."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

_PART = re.compile(r"(\d+)(ms|d|h|m|s)")
_UNITS = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1),
          "s": timedelta(seconds=1), "ms": timedelta(milliseconds=1)}
_ORDER = ("d", "h", "m", "s", "ms")


def parse_duration(value: Any) -> timedelta:
    """`1h30m` → 5400 s; units in decreasing order, each once; a bare number is refused
    (seconds or minutes? the file must say)."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a duration such as 30s, 15m, 2h, 1d or 1h30m")
    text = value.strip()
    pos, total, last = 0, timedelta(), -1
    for found in _PART.finditer(text):
        unit = found.group(2)
        if found.start() != pos or _ORDER.index(unit) <= last:
            break
        total += int(found.group(1)) * _UNITS[unit]
        pos, last = found.end(), _ORDER.index(unit)
    else:
        if pos == len(text) and pos > 0:
            return total
    raise ValueError(f"'{value}' is not a duration such as 30s, 15m, 2h, 1d or 1h30m")


def parse_percent(value: Any) -> float:
    """`80%` → 0.8."""
    if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?%", value.strip()):
        share = float(value.strip()[:-1]) / 100
        if 0 < share <= 1:
            return share
    raise ValueError(f"{value!r} is not a percentage between 0% and 100% such as 80%")


def format_duration(value: timedelta) -> str:
    """The shortest spelling: 5400 s → `1h30m`."""
    millis = round(value.total_seconds() * 1000)
    if millis == 0:
        return "0s"
    out = []
    for unit in _ORDER:
        size = round(_UNITS[unit].total_seconds() * 1000)
        count, millis = divmod(millis, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Percent = Annotated[float, BeforeValidator(parse_percent)]
