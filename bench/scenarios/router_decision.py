"""The routing decision alone (`RuleSet.decide`, no I/O) at 10 and 200 generated rules, and on
hostile texts: the shapes that take a backtracking engine seconds or forever (issue 10: about
15 s for `.*refund.*order` on 10,000 characters of `refund refund …`), decided by RE2."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.result import Context, Result, Scenario
from bench.stats import summarize
from intake.config import load_document
from intake.message import Message
from router.rules import RuleSet, load_rules

DECLARATIONS = """\
desks:
  - {id: general, name: 综合}
  - {id: aftersales, name: 售后}
  - {id: sales, name: 销售}
default_route:
  desk: general
routes:
"""
# Half the routes are found through the router's index (channel, account, a word), half must
# have their regular expression tried: the worst case for a message that matches the last.
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


# (label, pattern, hostile text): each decided to the default route, the text matching nothing.
HOSTILE_TEXT = ("refund " * 1_500)[:10_000]
HOSTILE = [
    (".*refund.*order, 10,000 chars of `refund refund …`", ".*refund.*order", HOSTILE_TEXT),
    ("(a+)+$, 9,999 × a then !", "(a+)+$", "a" * 9_999 + "!"),
    ("(x+x+)+y, 10,000 × x", "(x+x+)+y", "x" * 10_000),
    ("^(\\w+\\s?)*$, 2,000 words then !", "^(\\w+\\s?)*$", ("word " * 2_000)[:9_999] + "!"),
]
# A screened run of 50 such routes (one joined search, then RE2's set search) on the same text.
HOSTILE_RUN = 50


def hostile_rules_yaml(patterns: list[str]) -> str:
    return DECLARATIONS + "".join(
        f"  - id: h{i}\n    match:\n      where:\n"
        f"        - {{field: text, matches: '{pattern}'}}\n    desk: aftersales\n"
        for i, pattern in enumerate(patterns))


def rules_yaml(count: int) -> str:
    return DECLARATIONS + "".join((KEYED if i % 2 else SCANNED).format(i=i)
                                  for i in range(count))


def build_rules(count: int, text: str | None = None) -> RuleSet:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(text if text is not None else rules_yaml(count), encoding="utf-8")
        return load_rules(load_document(path), path.read_bytes())


def hostile_cases() -> list[tuple[str, RuleSet, Message]]:
    """(label, rules, message): one route per hostile pattern, then a screened run of them."""
    cases = []
    for label, pattern, text in HOSTILE:
        cases.append((label, build_rules(1, hostile_rules_yaml([pattern])),
                      message(text=text)))
    run = [f".*refund.*order{i}" for i in range(HOSTILE_RUN)]
    cases.append((f"{HOSTILE_RUN} routes .*refund.*orderN (screened), the same text",
                   build_rules(HOSTILE_RUN, hostile_rules_yaml(run)), message(text=HOSTILE_TEXT)))
    return cases


def message(**fields: object) -> Message:
    data: dict[str, object] = {
        "idempotency_key": "webform:contact:bench", "channel": "webform",
        "account": "contact", "kind": "form_submission",
        "sender": {"name": "李雷", "identities": [
            {"kind": "email", "value": "li@example.com", "verified": False}]},
        "subject": "订单问题", "text": "我的订单还没到",
        "form": {"form_id": "contact", "fields": {"topic": "none"}},
        "received_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}
    data.update(fields)
    return Message.model_validate(data)


def messages(count: int) -> list[tuple[str, Message]]:
    """(expected route, message): the last keyed route, the last scanned route, the default."""
    last_keyed = count - 1 if (count - 1) % 2 else count - 2
    last_scanned = count - 1 if (count - 1) % 2 == 0 else count - 2
    return [
        (f"r{last_keyed}", message(form={"form_id": "contact",
                                         "fields": {"topic": f"topic{last_keyed}"}})),
        (f"r{last_scanned}", message(subject=f"about keyword{last_scanned}")),
        ("default", message()),
    ]


class RouterDecision(Scenario):
    name = "router-decision"
    order = 20
    needs_gateway = False

    async def run(self, ctx: Context) -> list[Result]:
        rounds = 300 if ctx.options.quick else 5000
        results = []
        for count in (10, 200):
            rules = build_rules(count)
            timings_us: list[float] = []
            for expected, message in messages(count):
                decided = rules.decide(message).route
                if decided != expected:
                    raise AssertionError(f"{count} rules: expected {expected}, got {decided}")
                for _ in range(200):  # warm up
                    rules.decide(message)
                for _ in range(rounds):
                    started = time.perf_counter_ns()
                    rules.decide(message)
                    timings_us.append((time.perf_counter_ns() - started) / 1000)
            summary = summarize(timings_us)
            results.append(Result(
                scenario="router-decision", messages=len(timings_us), load=f"{count} rules",
                throughput=round(1e6 / summary["mean"], 1), latency=summary, unit="µs",
                extra={"cases": [e for e, _ in messages(count)],
                       "target": "median ≤ 50 µs, p99 ≤ 200 µs at 200 rules"}))
            ctx.log(f"router-decision at {count} rules: median {summary['p50']} µs, "
                    f"p99 {summary['p99']} µs")
        results.extend(self.hostile(ctx))
        return results

    def hostile(self, ctx: Context) -> list[Result]:
        """Each hostile text decided to the default route: a figure, per decision."""
        rounds = 20 if ctx.options.quick else 200
        results = []
        for label, rules, message_ in hostile_cases():
            decided = rules.decide(message_).route
            if decided != "default":
                raise AssertionError(f"hostile {label}: expected default, got {decided}")
            timings_us = []
            for _ in range(rounds):
                started = time.perf_counter_ns()
                rules.decide(message_)
                timings_us.append((time.perf_counter_ns() - started) / 1000)
            summary = summarize(timings_us)
            results.append(Result(
                scenario="router-decision", messages=len(timings_us), load=f"hostile: {label}",
                throughput=round(1e6 / summary["mean"], 1), latency=summary, unit="µs",
                extra={"target": "under 1 ms per decision (issue 10; re took about 15 s)"}))
            ctx.log(f"router-decision, hostile {label}: median {summary['p50']} µs, "
                    f"p99 {summary['p99']} µs")
        return results


SCENARIOS = [RouterDecision()]
