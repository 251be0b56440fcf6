"""Every lint code of issue 16, each from the smallest file that earns it, as `intake route
lint --format json` reports it (severity, code, the route, a line in the file)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from intake import calendars
from intake.cli import main

from .conftest import DECLARATIONS

CALENDAR = """\
calendars:
  - id: office
    timezone: Asia/Shanghai
    hours: {mon-fri: ["09:00-18:00"]}
"""

# (code, severity, routes, extra declarations)
CASES = [
    ("unknown-desk", "error", "- id: r\n  desk: nowhere", ""),
    ("unknown-skill-group", "error", "- id: r\n  desk: sales\n  skill_group: nope", ""),
    ("skill-group-wrong-desk", "error", "- id: r\n  desk: sales\n  skill_group: frontline", ""),
    ("unknown-calendar", "error",
     "- id: r\n  when: \"in_business_hours('nope')\"\n  desk: sales", ""),
    ("unknown-sla-policy", "error", "- id: r\n  desk: sales\n  sla: nope", ""),
    ("unknown-escalation", "error", "- id: r\n  desk: sales\n  escalation: nope", ""),
    ("unknown-category", "error", "- id: r\n  desk: sales\n  category: nope", ""),
    ("unknown-key", "error", "- id: r\n  when: \"custmer.vip_level >= 3\"\n  desk: sales", ""),
    ("unknown-function", "error", "- id: r\n  when: \"nope('x')\"\n  desk: sales", ""),
    ("bad-regex", "error", "- id: r\n  when: \"text matches '(a)\\\\1'\"\n  desk: sales", ""),
    ("bad-expression", "error", "- id: r\n  when: \"(channel == 'a'\"\n  desk: sales", ""),
    ("duplicate-id", "error", "- id: r\n  when: \"text contains 'a'\"\n  desk: sales\n"
     "- id: r\n  when: \"text contains 'b'\"\n  desk: sales", ""),
    ("shadowed-route", "error", "- id: a\n  when: \"channel == 'email'\"\n  desk: sales\n"
     "- id: b\n  when: \"channel == 'email' and text contains 'x'\"\n  desk: aftersales", ""),
    ("unreachable-route", "error",
     "- id: r\n  when: \"channel == 'email' and channel == 'wechat'\"\n  desk: sales", ""),
    ("bad-delivery", "error", "- id: r\n  mode: multi\n  deliveries:\n"
     "    - {desk: sales, role: owner}\n    - {desk: general, role: owner}", ""),
    ("bad-delivery", "error", "- id: r\n  mode: primary_secondary\n  deliveries:\n"
     "    - {desk: sales}\n    - {desk: general, role: overflow}", ""),
    ("bad-delivery", "error", "- id: r\n  mode: split\n  deliveries:\n"
     "    - {desk: sales, weight: 60}\n    - {desk: general, weight: 30}", ""),
    ("calendar-conflict", "error", "- id: r\n  when: \"is_workday('office')\"\n  desk: sales",
     CALENDAR + "    holidays: [2026-05-01]\n    workdays: [2026-05-01]\n"),
    ("overlapping-routes", "warning",
     "- id: a\n  when: \"channel == 'email' and subject contains 'x'\"\n  desk: sales\n"
     "- id: b\n  when: \"channel in ['email', 'sdk']\"\n  desk: aftersales", ""),
    ("unused", "warning", "- id: r\n  when: \"text contains 'x'\"\n  desk: sales", ""),
    ("skills-unsatisfied", "warning",
     "- id: r\n  when: \"text contains 'x'\"\n  desk: sales\n  skills: [klingon]", ""),
    ("lint-skipped", "warning", "- id: r\n  when: \"" + " and ".join(
        f"(text contains 'a{i}' or text contains 'b{i}')" for i in range(9))
     + "\"\n  desk: sales", ""),
    ("calendar-coverage", "warning",
     "- id: r\n  when: \"is_workday('office')\"\n  desk: sales",
     CALENDAR + "    include: [cn_statutory]\n"),
]


@pytest.mark.parametrize(("code", "severity", "routes", "extra"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_lint_code(code: str, severity: str, routes: str, extra: str,
                        write_rules: Callable[..., Path], capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    # cn_statutory knows no year the lint asks about (this one and the next), whatever the
    # pinned chinesecalendar's data reaches.
    monkeypatch.setattr(calendars, "statutory_years", lambda: {2000})
    path = write_rules(routes, declarations=DECLARATIONS + extra)
    exit_code = main(["route", "lint", str(path), "--format", "json"])
    findings = json.loads(capsys.readouterr().out)["findings"]
    found = [f for f in findings if f["code"] == code]
    assert found, findings
    assert found[0]["severity"] == severity
    assert found[0]["line"] is not None and found[0]["message"]
    # Exit 1 on any error, 0 on warnings alone.
    assert exit_code == (1 if any(f["severity"] == "error" for f in findings) else 0)
    if severity == "error":
        assert exit_code == 1


def test_every_code_of_the_issue_is_covered() -> None:
    issue = {"unknown-desk", "unknown-skill-group", "skill-group-wrong-desk", "unknown-calendar",
             "unknown-sla-policy", "unknown-escalation", "unknown-category", "unknown-key",
             "unknown-function", "bad-regex", "duplicate-id", "shadowed-route",
             "unreachable-route", "bad-delivery", "calendar-conflict", "overlapping-routes",
             "unused", "calendar-coverage", "skills-unsatisfied", "lint-skipped"}
    assert issue <= {case[0] for case in CASES}
