"""A guard so decisions stay fast, counted, not timed: on the benchmark's 200-route workload the
index and the screens leave at most one route to test (the figures are in `make bench
SCENARIO=router-decision`)."""

from __future__ import annotations

# The same rules and messages `make bench` measures (router-decision): the last keyed route,
# the last route that needs its pattern tried, and the default; then the hostile texts.
from bench.scenarios.router_decision import build_rules, hostile_cases, messages


def test_at_200_routes_the_index_and_screens_leave_at_most_the_route_that_matches() -> None:
    rules = build_rules(200)
    plan = rules.plans["webform"]
    assert len(plan.always) == 100 and len(plan.screens) == 1  # the scanned half, one screen
    for expected, message in messages(200):
        assert rules.decide(message).route == expected
        assert [route.id for route in plan.candidates(message)] == (
            [] if expected == "default" else [expected])


def test_each_hostile_text_decides_the_default_route() -> None:
    for label, rules, message in hostile_cases():
        assert rules.decide(message).route == "default", label
        assert rules.decide(message, full=True).route == "default", label
