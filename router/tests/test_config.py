"""Config mistakes in the routing sections are refused, naming the file, line and field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from intake.config import load_document, merge_rules
from intake.errors import ConfigInvalid
from router.rules import load_rules

from .conftest import DECLARATIONS, RulesFrom


def problems_of(rules_from: RulesFrom, routes: str = "", **kwargs: str) -> list[str]:
    with pytest.raises(ConfigInvalid) as caught:
        rules_from(routes, **kwargs)
    return caught.value.problems


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(needle)


def test_unknown_desk_names_line_and_field(rules_from: RulesFrom, tmp_path: Path) -> None:
    problems = problems_of(rules_from, """
        - id: ok
          desk: sales
        - id: ok2
          desk: sales
        - id: bad
          desk: nowhere
    """)
    path = tmp_path / "rules.yaml"
    assert problems == [f"{path}:{line_of(path, 'desk: nowhere')}: routes.2.desk: unknown desk "
                        "'nowhere' (declared: aftersales, general, sales)"]


def test_bad_regex_is_a_config_error(rules_from: RulesFrom, tmp_path: Path) -> None:
    (problem,) = problems_of(rules_from, """
        - id: r
          match:
            where:
              - field: subject
                matches: "(unclosed"
          desk: sales
    """)
    path = tmp_path / "rules.yaml"
    assert problem.startswith(f"{path}:{line_of(path, '(unclosed')}: "
                              "routes.0.match.where.0.matches: ")
    assert "not a pattern RE2 can run: missing ): (unclosed" in problem


@pytest.mark.parametrize(("pattern", "reason"), [
    ("(x)\\\\1", "backreferences are not supported"),
    ("refund(?=.*order)", "lookahead and lookbehind assertions are not supported"),
    ("(?<!no )refund", "lookahead and lookbehind assertions are not supported"),
    ("a++", "possessive quantifiers are not needed"),
])
def test_a_pattern_re2_cannot_run_is_refused_with_file_line_and_reason(
        rules_from: RulesFrom, tmp_path: Path, pattern: str, reason: str) -> None:
    (problem,) = problems_of(rules_from, f"""
        - id: r
          match:
            where:
              - field: subject
                matches: "{pattern}"
          desk: sales
    """)
    path = tmp_path / "rules.yaml"
    assert problem.startswith(f"{path}:{line_of(path, 'matches:')}: "
                              "routes.0.match.where.0.matches: ")
    assert "not a pattern RE2 can run" in problem and reason in problem


def test_unknown_key_is_refused(rules_from: RulesFrom, tmp_path: Path) -> None:
    (problem,) = problems_of(rules_from, "- id: r\n  desk: sales\n  priorty: high")
    path = tmp_path / "rules.yaml"
    assert problem == (f"{path}:{line_of(path, 'priorty')}: routes.0.priorty: "
                       "Extra inputs are not permitted")


def test_missing_default_route_is_refused(rules_from: RulesFrom, tmp_path: Path) -> None:
    (problem,) = problems_of(rules_from, "- id: r\n  desk: sales", default="")
    assert problem == f"{tmp_path / 'rules.yaml'}: default_route: Field required"


@pytest.mark.parametrize(("routes", "field", "message"), [
    ("- id: r\n  desk: sales\n  skill_group: complaints", "routes.0.skill_group",
     "skill group 'complaints' belongs to desk 'aftersales', not 'sales'"),
    ("- id: r\n  desk: sales\n  skill_group: nope", "routes.0.skill_group",
     "unknown skill group 'nope'"),
    ("- id: r\n  desk: sales\n  category: gossip", "routes.0.category",
     "unknown category 'gossip'"),
    ("- id: r\n  desk: sales\n  sla: gold", "routes.0.sla", "unknown SLA policy 'gold'"),
    ("- id: r\n  desk: sales\n  priority: asap", "routes.0.priority",
     "Input should be 'low', 'normal', 'high' or 'urgent'"),
    ("- id: r\n  match: {channel: fax}\n  desk: sales", "routes.0.match.channel.0",
     "Input should be 'email'"),
    ("- id: r\n  priority: high", "routes.0.desk", "required with mode single"),
    ("- id: r\n  desk: sales\n- id: r\n  desk: sales", "routes.1.id", "duplicate id 'r'"),
    ("- id: default\n  desk: sales", "routes.0.id", "'default' names the default route"),
    ("- id: a.b\n  desk: sales", "routes.0.id", "String should match pattern"),
    ("- id: r\n  match:\n    where:\n      - {field: subjet, equals: x}\n  desk: sales",
     "routes.0.match.where.0.field", "'subjet' is not a field of the message"),
    ("- id: r\n  match:\n    where:\n      - {field: sender.nickname, exists: true}\n"
     "  desk: sales", "routes.0.match.where.0.field", "'nickname' is not a field of sender"),
    ("- id: r\n  match:\n    where:\n      - {field: subject.x, exists: true}\n  desk: sales",
     "routes.0.match.where.0.field", "'subject' has no field 'x'"),
    ("- id: r\n  match:\n    where:\n      - {field: subject}\n  desk: sales",
     "routes.0.match.where.0", "needs exactly one operator of equals, not_equals, in, "
     "contains, matches, exists, gt, lt (got none)"),
    ("- id: r\n  match:\n    where:\n      - {field: subject, equals: a, contains: b}\n"
     "  desk: sales", "routes.0.match.where.0", "(got equals and contains)"),
    ("- id: r\n  mode: split\n  desk: sales", "routes.0.desk",
     "with mode split, name each desk under deliveries"),
    ("- id: r\n  mode: splat\n  desk: sales", "routes.0.mode",
     "Input should be 'single', 'multi', 'primary_secondary' or 'split'"),
    ("- id: r\n  desk: sales\n  deliveries: [{desk: general}]", "routes.0.deliveries",
     "deliveries need mode multi, primary_secondary or split"),
    ("- id: r\n  mode: split\n  deliveries: [{desk: general, weight: 50}, "
     "{desk: sales, weight: 40}]", "routes.0.deliveries", "split weights sum to 90, not 100"),
    ("- id: r\n  mode: primary_secondary\n  deliveries: [{desk: general}, "
     "{desk: sales, role: overflow}]", "routes.0.deliveries.1.after",
     "an overflow delivery needs `after`"),
    ("- id: r\n  sla: nope\n  desk: sales", "routes.0.sla", "unknown SLA policy 'nope'"),
    ("- id: r\n  escalation: nope\n  desk: sales", "routes.0.escalation",
     "unknown escalation 'nope'"),
    ("- id: r\n  mode: multi\n  deliveries: [{desk: general}]", "routes.0.deliveries",
     "mode multi needs at least two deliveries"),
    ("- id: r\n  mode: multi\n  deliveries: [{desk: general}, {desk: mars}]",
     "routes.0.deliveries.1.desk", "unknown desk 'mars'"),
    ("- id: r\n  mode: multi\n  deliveries: [{desk: general, role: owner}, "
     "{desk: sales, role: owner}]", "routes.0.deliveries",
     "exactly one delivery with role owner (got 2)"),
    ("- id: r\n  mode: multi\n  deliveries: [{desk: general, role: copy}, "
     "{desk: sales, role: copy}]", "routes.0.deliveries",
     "exactly one delivery with role owner (got 0)"),
    ("- id: r\n  mode: primary_secondary\n  deliveries: [{desk: general}, "
     "{desk: sales, role: copy}]", "routes.0.deliveries.1.role",
     "role copy does not fit mode primary_secondary"),
])
def test_route_mistakes_name_their_field(rules_from: RulesFrom, routes: str, field: str,
                                         message: str) -> None:
    problems = problems_of(rules_from, routes)
    assert any(f": {field}: " in p and message in p for p in problems), problems


def test_every_cross_reference_problem_is_reported_at_once(rules_from: RulesFrom) -> None:
    problems = problems_of(rules_from, "- id: a\n  desk: x\n- id: b\n  desk: y",
                           default="default_route: {desk: z}")
    assert [p.split(": ")[1] for p in problems] == ["routes.0.desk", "routes.1.desk",
                                                    "default_route.desk"]


def test_skill_group_of_an_unknown_desk(rules_from: RulesFrom) -> None:
    problems = problems_of(rules_from, declarations=DECLARATIONS.replace(
        "  - {id: presales, desk: sales}", "  - {id: presales, desk: salez}"))
    assert any(": skill_groups.2.desk: unknown desk 'salez'" in p for p in problems)


def test_categories_are_free_when_none_are_declared(rules_from: RulesFrom) -> None:
    declarations = "desks:\n  - {id: general, name: 综合}\n"
    rules = rules_from(default="default_route: {desk: general, category: anything}",
                       declarations=declarations)
    assert rules.default.target.category == "anything"


def test_empty_sections_read_as_empty(rules_from: RulesFrom) -> None:
    rules = rules_from(declarations="desks:\n  - {id: general, name: 综合}\nroutes:\n"
                       "categories:\n", default="default_route: {desk: general}")
    assert rules.routes == ()


def test_errors_in_a_separate_rules_file_name_that_file(
        tmp_path: Path, write_rules: Callable[..., Path]) -> None:
    config = tmp_path / "intake.yaml"
    config.write_text("channels: {}\n", encoding="utf-8")
    rules_path = write_rules("- id: r\n  desk: nowhere", name="routing.yaml")
    merged = merge_rules(load_document(config), load_document(rules_path))
    with pytest.raises(ConfigInvalid) as caught:
        load_rules(merged, rules_path.read_bytes())
    (problem,) = caught.value.problems
    assert problem.startswith(f"{rules_path}:{line_of(rules_path, 'nowhere')}: routes.0.desk:")
