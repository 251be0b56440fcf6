"""The fuzz harness: each entry point is a `Target` (a strategy and a check) run under hypothesis.

`FUZZ_N` sets the inputs per target (`make fuzz`: 100,000; `make test`: a few hundred). A check
that raises is a crash: its input is written to `tests/fuzz/crashes/<target>-<digest>.json` with
the traceback, and `python -m tests.fuzz.replay <file>` runs that one input again. A connector
that lands later adds `tests/fuzz/test_<channel>.py` declaring its targets with the same
helpers (`run_target`, `check_http_answer`, `hostile_text`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

CRASHES = Path(__file__).resolve().parent / "crashes"
DEFAULT_N = 200
# Targets that ran in this process: name -> (inputs, seconds); the summary prints them.
RESULTS: dict[str, tuple[int, float]] = {}
# HTTP targets that count their answers: name -> {status: answers}; the summary prints them.
STATUSES: dict[str, dict[str, int]] = {}
TARGETS: dict[str, Target] = {}


def fuzz_n(scale: float = 1.0) -> int:
    """Inputs per target: `FUZZ_N` (default a short run), times `scale` for slow targets."""
    return max(1, int(int(os.environ.get("FUZZ_N", DEFAULT_N)) * scale))


@dataclass(frozen=True)
class Target:
    """One entry point: `check(input)` raises only on a broken invariant (a crash)."""

    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]
    scale: float = 1.0


def to_jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode()}
    if isinstance(value, tuple):
        return {"__tuple__": [to_jsonable(v) for v in value]}
    if isinstance(value, list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[to_jsonable(k), to_jsonable(v)] for k, v in value.items()]}
    return value


def from_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        if "__bytes__" in value:
            return base64.b64decode(value["__bytes__"])
        if "__tuple__" in value:
            return tuple(from_jsonable(v) for v in value["__tuple__"])
        return {from_jsonable(k): from_jsonable(v) for k, v in value["__dict__"]}
    if isinstance(value, list):
        return [from_jsonable(v) for v in value]
    return value


def write_reproducer(target: str, value: Any, error: BaseException) -> Path:
    encoded = to_jsonable(value)
    digest = hashlib.sha256(json.dumps(encoded, sort_keys=True).encode()).hexdigest()[:12]
    CRASHES.mkdir(parents=True, exist_ok=True)
    path = CRASHES / f"{target}-{digest}.json"
    path.write_text(json.dumps({
        "target": target, "input": encoded,
        "error": "".join(traceback.format_exception(error)),
        "replay": f"python -m tests.fuzz.replay {path.relative_to(CRASHES.parent.parent.parent)}",
    }, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def run_target(target: Target) -> None:
    """Feed `fuzz_n()` inputs to the target; the first crash fails the test with its file."""
    TARGETS[target.name] = target
    count = 0
    failing: list[tuple[Any, BaseException]] = []

    @settings(max_examples=fuzz_n(target.scale), deadline=None, database=None,
              derandomize=os.environ.get("FUZZ_SEED") is None and fuzz_n() <= DEFAULT_N,
              phases=[Phase.explicit, Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(target.strategy)
    def fuzz(value: Any) -> None:
        nonlocal count
        count += 1
        try:
            target.check(value)
        except Exception as exc:
            failing.append((value, exc))  # hypothesis replays the smallest failing input last
            raise

    began = time.monotonic()
    try:
        fuzz()
    except Exception as exc:
        if not failing:
            raise
        path = write_reproducer(target.name, *failing[-1])
        raise AssertionError(f"{target.name} crashed; reproducer: {path}") from exc
    finally:
        seconds = time.monotonic() - began
        RESULTS[target.name] = (count, seconds)
        if fuzz_n() > DEFAULT_N:  # a long run leaves its figures even if stopped half-way
            CRASHES.mkdir(parents=True, exist_ok=True)
            with open(CRASHES / "last-run.txt", "a", encoding="utf-8") as log:
                log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {target.name} {count} inputs "
                          f"{seconds:.0f} s\n")


# -- strategies shared by every channel ----------------------------------------------------

# Characters that broke parsers elsewhere: NUL, controls, bidi overrides, separators, BOM.
NASTY_CHARS = ("\x00", "\r", "\n", "\t", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\u202e",
               "\u202d", "\u2066", "\u200b", "\ufeff", "\ud7ff", "\uffff", "\U0001f4a9", "%00",
               "../", "..\\", "/", "\\", "\"", "'", "<", ">", "&", ";", "=", "%", "*", "?")


def hostile_text(max_size: int = 60) -> st.SearchStrategy[str]:
    """Text mixing ordinary characters with the ones that break parsers."""
    pieces = st.one_of(st.text(max_size=8), st.sampled_from(NASTY_CHARS),
                       st.sampled_from(("", " ", "a" * 300, "é" * 50, "中文", "0", "-1",
                                        "1e309", "NaN", "null", "true")))
    return st.lists(pieces, max_size=max(1, max_size // 8)).map("".join)


def check_http_answer(status: int, content_type: str, body: bytes) -> None:
    """The invariant at every HTTP edge: no 5xx, and every refusal says why, in JSON or HTML."""
    assert status < 500, (status, body[:500])
    if status >= 400:
        if content_type == "application/json":
            error = json.loads(body)
            assert isinstance(error.get("error"), str) and error["error"], error
            assert isinstance(error.get("message"), str), error
        else:
            assert content_type == "text/html", (status, content_type, body[:300])
