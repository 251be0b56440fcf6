"""A guard so decisions stay fast: 200 routes, the message matching the last one or none."""

from __future__ import annotations

import statistics
import time

from .conftest import RulesFrom, make_message

# Half the routes are found by a word (the index), half need their regex tried (the worst case).
KEYED = """\
- id: r{i}
  match:
    channel: [webform, email]
    account: [contact, support]
    where:
      - {{field: form.fields.topic, equals: topic{i}}}
      - {{field: subject, matches: "订单|order"}}
  desk: sales
  priority: high
"""
SCANNED = """\
- id: r{i}
  match:
    where:
      - {{field: subject, matches: "^about keyword{i}$"}}
      - {{field: form.fields.topic, not_equals: spam}}
  desk: aftersales
"""


def test_decide_is_fast_at_200_routes(rules_from: RulesFrom) -> None:
    rules = rules_from("".join((KEYED if i % 2 else SCANNED).format(i=i) for i in range(200)))
    cases = {
        "r199": make_message(form={"form_id": "contact", "fields": {"topic": "topic199"}}),
        "r198": make_message(subject="about keyword198"),
        "default": make_message(),
    }
    for expected, message in cases.items():
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
