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

# Issue 16's set: 200 routes in the `when` language, eight shapes in turn (equality, `in` and a
# Chinese `contains`, `or`, a regex, a customer key, `not`, a calendar function, `lower`/`len`),
# each keyed by its number between `#` so no route's text is part of another's.
WHEN_DECLARATIONS = DECLARATIONS.replace("default_route:", """\
calendars:
  - {id: cn_office, timezone: Asia/Shanghai, hours: {mon-fri: ["09:00-12:00", "13:30-18:00"]}}
default_route:""")
WHEN_SHAPES = (
    "channel == 'email' and form.fields.topic == 'topic#{i}#'",
    "account in ['contact', 'support'] and subject contains '订单#{i}#'",
    "text contains '退款#{i}#' or text contains '退货#{i}#'",
    "subject matches '^SF[0-9]{{9}}#{i}#$'",
    "customer.vip_level >= 3 and form.fields.topic == 'vip#{i}#'",
    "not (channel == 'wechat') and form.fields.order_no == 'ORD#{i}#'",
    "in_business_hours('cn_office') and form.fields.topic == 'hours#{i}#'",
    "lower(subject) == 'question #{i}#' and len(text) > 3",
)
# (shape, fields that make route i of that shape match)
WHEN_HITS = (
    (1, lambda i: {"subject": f"关于订单#{i}#"}),
    (2, lambda i: {"text": f"我要退货#{i}#，谢谢"}),
    (3, lambda i: {"subject": f"SF123456789#{i}#"}),
    (4, lambda i: {"form": {"form_id": "contact", "fields": {"topic": f"vip#{i}#"}}}),
    (5, lambda i: {"form": {"form_id": "contact", "fields": {"order_no": f"ORD#{i}#"}}}),
    (7, lambda i: {"subject": f"Question #{i}#"}),
)
# Half the messages reach the default: near misses of the same shapes.
WHEN_MISSES = (
    {"subject": "关于订单#999#"}, {"text": "退款 #12# 没到"}, {"subject": "SF12345#3#"},
    {"form": {"form_id": "contact", "fields": {"topic": "vip#4"}}},
    {"channel": "wechat", "account": "wx1", "idempotency_key": "wechat:wx1:1",
     "form": {"form_id": "contact", "fields": {"order_no": "ORD#5#"}}},
    {"subject": "question 7"},
)
VIP = {"id": "cus_1", "vip_level": 5, "language": "zh-CN", "tickets_count": 3,
       "open_tickets_count": 1, "fields": {}}


def when_rules_yaml(count: int) -> str:
    return WHEN_DECLARATIONS + "".join(
        f"  - id: w{i}\n    when: \"{WHEN_SHAPES[i % len(WHEN_SHAPES)].format(i=i)}\"\n"
        f"    desk: {('sales', 'aftersales')[i % 2]}\n" for i in range(count))


def when_messages(count: int) -> list[tuple[str, Message]]:
    """(expected route, message): the last route of six shapes, and six near misses."""
    cases = []
    for shape, fields in WHEN_HITS:
        last = max(i for i in range(count) if i % len(WHEN_SHAPES) == shape)
        cases.append((f"w{last}", message(**fields(last))))
    return cases + [("default", message(**fields)) for fields in WHEN_MISSES]


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
        results.append(self.when_language(ctx, rounds))
        results.extend(self.hostile(ctx))
        return results

    def when_language(self, ctx: Context, rounds: int) -> Result:
        """Issue 16's figure: 200 routes in the `when` language, half the messages reaching
        the default, a known VIP customer."""
        count = 200
        rules = build_rules(count, when_rules_yaml(count))
        cases = when_messages(count)
        timings_us: list[float] = []
        for expected, message_ in cases:
            decided = rules.decide(message_, VIP).route
            if decided != expected:
                raise AssertionError(f"when language: expected {expected}, got {decided}")
            for _ in range(200):  # warm up
                rules.decide(message_, VIP)
            for _ in range(rounds):
                started = time.perf_counter_ns()
                rules.decide(message_, VIP)
                timings_us.append((time.perf_counter_ns() - started) / 1000)
        summary = summarize(timings_us)
        ctx.log(f"router-decision at {count} rules in the when language: median "
                f"{summary['p50']} µs, p99 {summary['p99']} µs")
        return Result(
            scenario="router-decision", messages=len(timings_us),
            load=f"{count} rules, when language", throughput=round(1e6 / summary["mean"], 1),
            latency=summary, unit="µs",
            extra={"cases": [e for e, _ in cases],
                   "target": "median ≤ 50 µs, p99 ≤ 200 µs (issue 16)"})

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
