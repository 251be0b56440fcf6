"""Screens (one RE2 search for a run of pattern routes) only skip what cannot match."""

from __future__ import annotations

import dataclasses
import random

from router.rules import RuleSet

from .conftest import RulesFrom, make_message
from .test_index import naive_route

PATTERNS = ["订单", "(?i)refund", "^about keyword\\d+$", "发票|invoice", "(?i)(urgent|asap)",
            "(?s)a.a", "(?P<x>quote)", "(?P<x>price)", "^\\s*$", "退[货款]", "(?m)^end$",
            "(?i)élan", ".*refund.*order"]
SUBJECTS = ["订单问题", "REFUND please", "about keyword7", "about keyword", "invoice 2026",
            "URGENT", "a\na", "quote", "price", "   ", "退货", "hello", "", "Asap!",
            "the\nend\nnow", "ÉLAN", "refund my order", "Refund my order"]


def unscreened(rules: RuleSet) -> RuleSet:
    """The same rules with every screened route tried one by one."""
    return dataclasses.replace(rules, plans={channel: dataclasses.replace(
        plan, screens=(), always=tuple(sorted(
            [*plan.always, *(r for screen in plan.screens for r in screen.routes)],
            key=lambda route: route.position)))
        for channel, plan in rules.plans.items()})


def routes_text(rng: random.Random, count: int) -> str:
    lines = []
    for i in range(count):
        lines += [f"- id: r{i}", "  match:", "    where:"]
        lines.append(f"      - {{field: subject, matches: '{rng.choice(PATTERNS)}'}}")
        if rng.random() < 0.4:
            lines.append("      - {field: form.fields.topic, not_equals: spam}")
        lines.append("  desk: sales")
    return "\n".join(lines)


def test_screened_decisions_equal_route_by_route_ones(rules_from: RulesFrom) -> None:
    rng = random.Random(7)
    screened_any = False
    for _ in range(30):
        rules = rules_from(routes_text(rng, rng.randint(1, 40)), lint=False)
        screened_any |= any(plan.screens for plan in rules.plans.values())
        plain = unscreened(rules)
        for subject in SUBJECTS:
            for topic in ("complaint", "spam"):
                message = make_message(subject=subject, form={
                    "form_id": "contact", "fields": {"topic": topic}})
                decided = rules.decide(message, full=True)
                assert decided.route == naive_route(rules, message), subject
                expected = plain.decide(message, full=True)
                assert [t.model_dump() for t in decided.tried] == [
                    t.model_dump() for t in expected.tried]
    assert screened_any  # the test really exercised screens


def test_flags_stay_with_their_own_pattern_in_a_joined_screen(rules_from: RulesFrom) -> None:
    rules = rules_from("\n".join(f"- id: r{i}\n  match:\n    where:\n"
                                 f"      - {{field: subject, matches: '{pattern}'}}\n  desk: sales"
                                 for i, pattern in enumerate(["(?i)abc", "def", "^ghi", "jkl$"])))
    assert rules.plans["webform"].screens
    assert rules.decide(make_message(subject="ABC")).route == "r0"
    assert rules.decide(make_message(subject="DEF")).route == "default"  # `def` ignores no case
    assert rules.decide(make_message(subject="x ghi")).route == "default"
    assert rules.decide(make_message(subject="jkl x")).route == "default"


def test_a_message_with_no_text_in_the_field_skips_the_whole_run(rules_from: RulesFrom) -> None:
    rules = rules_from("\n".join(f"- id: r{i}\n  match:\n    where:\n"
                                 f"      - {{field: subject, matches: 'k{i}'}}\n  desk: sales"
                                 for i in range(8)))
    plan = rules.plans["webform"]
    assert len(plan.screens) == 1
    assert list(plan.screened(make_message(subject=None))) == []
    assert list(plan.screened(make_message(subject="nothing"))) == []
    # A hit: only the routes whose pattern is found are tried, in order.
    assert [r.id for r in plan.screened(make_message(subject="k5"))] == ["r5"]
    assert [r.id for r in plan.screened(make_message(subject="k6 k2"))] == ["r2", "r6"]
    assert rules.decide(make_message(subject="k6 k2")).route == "r2"
    assert rules.decide(make_message(subject="k5")).route == "r5"


def test_patterns_too_large_to_join_get_no_screen_and_still_decide(rules_from: RulesFrom) -> None:
    # Each fits RE2's memory budget alone; four joined do not: the routes are tried one by one.
    big = "(?:" + "|".join(f"{c}.{{999}}" for c in "abcde") + ")"
    rules = rules_from("\n".join(f"- id: r{i}\n  match:\n    where:\n"
                                 f"      - {{field: text, matches: '{big}x{i}'}}\n  desk: sales"
                                 for i in range(4)))
    assert all(not plan.screens for plan in rules.plans.values())
    assert rules.decide(make_message(text="c" * 1000 + "x2")).route == "r2"
    assert rules.decide(make_message(text="c" * 999 + "x2")).route == "default"


WHEN_TESTS = ["text contains '退款'", "text contains 'refund'", "text matches '(?i)urgent'",
              "text contains '退货' or text contains '换货'",
              "text contains 'a.b' or text matches '^\\\\s*$'", "text contains '#7#'",
              "lower(text) contains 'refund'", "text contains 'order' and channel != 'email'"]
TEXTS = ["我要退款", "REFUND", "refund now", "urgent!", "换货", "a.b", "axb", "   ", "#7#",
         "nothing here", "x" * 10_000 + "退款",  # found only past what `matches` reads
         "x" * 10_000 + "urgent", "order 7"]


def test_contains_and_or_routes_screen_like_route_by_route(rules_from: RulesFrom) -> None:
    rng = random.Random(11)
    screened_any = False
    for _ in range(20):
        count = rng.randint(4, 30)
        routes = "\n".join(f"- id: w{i}\n  when: \"{rng.choice(WHEN_TESTS)}\"\n  desk: sales"
                           for i in range(count))
        rules = rules_from(routes, lint=False)
        screened_any |= bool(rules.plans["webform"].screens)
        plain = unscreened(rules)
        for text in TEXTS:
            message = make_message(text=text)
            decided = rules.decide(message, full=True)
            assert decided.route == naive_route(rules, message), text[-20:]
            assert [t.model_dump() for t in decided.tried] == [
                t.model_dump() for t in plain.decide(message, full=True).tried]
    assert screened_any
