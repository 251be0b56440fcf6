"""A guard so decisions stay fast: the benchmark's 200-route workload, with generous bounds."""

from __future__ import annotations

import statistics
import time

# The same rules and messages `make bench` measures (router-decision): the last keyed route,
# the last route that needs its regex tried, and the default.
from bench.scenarios.router_decision import build_rules, messages


def test_decide_is_fast_at_200_routes() -> None:
    rules = build_rules(200)
    for expected, message in messages(200):
        assert rules.decide(message).route == expected
        timings = []
        for _ in range(2000):
            start = time.perf_counter_ns()
            rules.decide(message)
            timings.append(time.perf_counter_ns() - start)
        timings.sort()
        median_us = statistics.median(timings) / 1000
        p99_us = timings[int(len(timings) * 0.99)] / 1000
        print(f"decide at 200 routes → {expected}: median {median_us:.1f} µs, "
              f"p99 {p99_us:.1f} µs")
        # Generous bounds so a slow CI machine passes; the target is 50 µs / 200 µs.
        assert median_us < 500
        assert p99_us < 2000
