"""Prints how many inputs each fuzz target took, and closes the targets' servers."""

from __future__ import annotations

from typing import Any

from .edge import close_all
from .harness import RESULTS, STATUSES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    terminalreporter.section("fuzz")
    for name, (count, seconds) in sorted(RESULTS.items()):
        answers = STATUSES.get(name)
        by_status = ("  " + " ".join(f"{status}:{n}" for status, n in sorted(answers.items()))
                     if answers else "")
        terminalreporter.write_line(f"{name:<24} {count:>8} inputs  {seconds:8.1f} s{by_status}")


def pytest_sessionfinish() -> None:
    close_all()
