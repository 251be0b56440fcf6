"""Lint on the DNF of each route's condition: shadowed, unreachable, overlapping, in both
notations; declarations nobody uses; the refusal of a file with a lint error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from intake.config import load_document
from intake.errors import ConfigInvalid
from router.lint import dnf
from router.load import analyse
from router.rules import load_rules

from .conftest import RulesFrom


def findings(write_rules: Callable[..., Path], routes: str) -> list[tuple[str, str | None]]:
    path = write_rules(routes)
    analysis = analyse(load_document(path), path.read_bytes(), run_tests=False)
    return [(f.code, f.route) for f in analysis.findings
            if f.code in ("shadowed-route", "unreachable-route", "overlapping-routes",
                          "lint-skipped")]


def pair(first: str, second: str) -> str:
    def route(name: str, condition: str) -> str:
        key = "when" if not condition.startswith("match:") else ""
        body = f"  {key}: \"{condition}\"" if key else f"  {condition}"
        return f"- id: {name}\n{body}\n  desk: sales"

    return route("a", first) + "\n" + route("b", second)


SHADOWED = [
    ("channel == 'email'", "channel == 'email'"),  # the same atom
    ("channel == 'email'", "channel == 'email' and subject contains 'x'"),  # a subset
    ("channel in ['email', 'wechat']", "channel == 'email'"),  # == implies in
    ("channel in ['email', 'wechat']", "channel in ['email']"),  # in [a] ⇒ in [a, b]
    ("channel != 'sdk'", "channel == 'email'"),  # == implies !=
    ("channel not in ['sdk', 'api']", "channel == 'email'"),  # == implies not in
    ("form.fields.amount >= 2", "form.fields.amount >= 3"),  # ranges
    ("form.fields.amount > 2", "form.fields.amount == 5"),
    ("text contains 'X'", "text contains 'YXZ'"),  # substrings
    ("true", "channel == 'email'"),  # an earlier route without condition
    ("channel == 'email' or channel == 'sdk'", "channel == 'sdk' and text contains '退款'"),
    ("text contains 'a'", "text contains 'a' or text contains 'ab'"),  # each conjunction
    ("match: {channel: email}", "channel == 'email' and kind == 'message'"),  # v1 then when
    ("channel == 'email'", "match: {channel: [email], account: support}"),  # when then v1
    ("match: {where: [{field: form.fields.topic, in: [a, b]}]}",
     "form.fields.topic == 'a'"),
    ("not channel == 'email'", "channel == 'sdk'"),  # negation normalised to !=
]


@pytest.mark.parametrize(("first", "second"), SHADOWED)
def test_shadowed_routes(write_rules: Callable[..., Path], first: str, second: str) -> None:
    assert ("shadowed-route", "b") in findings(write_rules, pair(first, second))


UNREACHABLE = [
    "channel == 'email' and channel == 'wechat'",
    "call.duration_s > 5 and call.duration_s < 3",
    "channel == 'email' and channel != 'email'",
    "channel == 'email' and not channel == 'email'",
    "channel in ['email'] and channel in ['sdk']",
    "subject exists and not subject exists",
    "false",
    "(channel == 'email' or channel == 'sdk') and channel == 'wechat'",
    "text matches 'x' and not text matches 'x'",
]


@pytest.mark.parametrize("condition", UNREACHABLE)
def test_unreachable_routes(write_rules: Callable[..., Path], condition: str) -> None:
    routes = f"- id: b\n  when: \"{condition}\"\n  desk: sales"
    assert findings(write_rules, routes) == [("unreachable-route", "b")]


NEITHER = [
    ("channel == 'email'", "channel == 'sdk'"),
    ("channel == 'email' and subject contains 'x'", "channel == 'email'"),  # b is wider
    ("flags == 'bounce'", "flags == 'spam_suspect'"),  # a list: not exclusive, not implied
    ("form.fields.amount >= 3", "form.fields.amount >= 2"),
    ("text contains 'YXZ'", "text contains 'X'"),
    ("sender.identities.kind == 'phone'", "sender.identities.kind == 'email'"),
]


@pytest.mark.parametrize(("first", "second"), NEITHER)
def test_routes_that_are_not_shadowed(write_rules: Callable[..., Path], first: str,
                                      second: str) -> None:
    found = findings(write_rules, pair(first, second))
    assert ("shadowed-route", "b") not in found
    assert ("unreachable-route", "b") not in found


def test_a_list_key_is_not_contradicted_by_two_values(write_rules: Callable[..., Path]) -> None:
    # flags holds several: `flags == 'a' and flags == 'b'` can hold (any element).
    routes = "- id: b\n  when: \"flags == 'bounce' and flags == 'signed'\"\n  desk: sales"
    assert findings(write_rules, routes) == []


def test_overlapping_routes_are_a_warning(write_rules: Callable[..., Path]) -> None:
    found = findings(write_rules, pair("channel == 'email' and subject contains 'x'",
                                       "channel in ['email', 'sdk']"))
    assert found == [("overlapping-routes", "b")]


def test_over_256_conjunctions_skip_the_check(write_rules: Callable[..., Path]) -> None:
    ors = " and ".join(f"(text contains 'a{i}' or text contains 'b{i}')" for i in range(9))
    routes = f"- id: b\n  when: \"{ors}\"\n  desk: sales"
    assert findings(write_rules, routes) == [("lint-skipped", "b")]


def test_dnf_of_nested_negations() -> None:
    from router.expr import parse

    form = dnf(parse("not (channel == 'a' or not text contains 'x')"))
    assert form == [(("channel", "!=", "a", False), ("text", "contains", "x", False))]


def test_a_shadowed_route_refuses_the_file(rules_from: RulesFrom) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        rules_from("- id: a\n  match: {channel: webform}\n  desk: sales\n"
                   "- id: b\n  match: {channel: webform}\n  when: \"text contains 'x'\"\n"
                   "  desk: aftersales")
    (problem,) = caught.value.problems
    assert "routes.1: every message it matches is taken first by route(s) a" in problem


def test_unused_and_unsatisfied_are_warnings(write_rules: Callable[..., Path]) -> None:
    path = write_rules("- id: r\n  when: \"text contains 'x'\"\n  desk: sales\n"
                       "  skills: [klingon]")
    analysis = analyse(load_document(path), path.read_bytes())
    warnings = {(f.code, f.message.split(" is ")[0]) for f in analysis.findings
                if f.severity == "warning"}
    assert ("unused", "desk 'aftersales'") in warnings
    assert ("unused", "SLA policy 'standard'") in warnings
    assert any(code == "skills-unsatisfied" for code, _ in warnings)
    assert not analysis.errors
    rules = load_rules(load_document(path), path.read_bytes())  # warnings never refuse
    assert rules.warnings


def test_a_failing_inline_test_refuses_the_file(rules_from: RulesFrom) -> None:
    with pytest.raises(ConfigInvalid) as caught:
        rules_from("""
            - id: r
              when: "text contains '退款'"
              desk: sales
              tests:
                - name: refund
                  message: {text: "我要退款"}
                  expect: {route: r, priority: high}
        """)
    (problem,) = caught.value.problems
    assert problem == "test refund of route r: priority: expected 'high', got 'normal'"
