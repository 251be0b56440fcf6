"""A guard so decisions stay fast, counted, not timed: on the benchmark's 200-route workload the
index and the screens leave at most one route to test (the figures are in `make bench
SCENARIO=router-decision`)."""

from __future__ import annotations

# The same rules and messages `make bench` measures (router-decision): the last keyed route,
# the last route that needs its pattern tried, and the default; then the hostile texts.
from bench.scenarios.router_decision import (
    VIP,
    build_rules,
    hostile_cases,
    messages,
    when_messages,
    when_rules_yaml,
)


def test_at_200_routes_the_index_and_screens_leave_at_most_the_route_that_matches() -> None:
    rules = build_rules(200)
    plan = rules.plans["webform"]
    # the scanned half, one screen; nothing left to try for every message
    assert plan.always == () and [len(s.routes) for s in plan.screens] == [100]
    for expected, message in messages(200):
        assert rules.decide(message).route == expected
        assert [route.id for route in plan.candidates(message)] == (
            [] if expected == "default" else [expected])


def test_in_the_when_language_too_at_most_the_route_that_matches_is_tried() -> None:
    # Issue 16's set: equality, `in` with a Chinese `contains`, `or`, regexes, customer keys,
    # `not`, calendar functions, `lower`: the `contains` and `or` routes share screens, the
    # `lower(subject) ==` routes are looked up by value.
    rules = build_rules(200, when_rules_yaml(200))
    plan = rules.plans["webform"]
    assert plan.always == () and sorted(len(s.routes) for s in plan.screens) == [25, 50]
    for expected, message in when_messages(200):
        assert rules.decide(message, VIP).route == expected
        tried = [route.id for route in plan.candidates(message)]
        assert tried == [expected] if expected != "default" else len(tried) <= 1, tried


def test_each_hostile_text_decides_the_default_route() -> None:
    for label, rules, message in hostile_cases():
        assert rules.decide(message).route == "default", label
        assert rules.decide(message, full=True).route == "default", label
