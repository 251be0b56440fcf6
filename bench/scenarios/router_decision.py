"""The routing decision alone (`RuleSet.decide`, no I/O) at 10 and 200 generated rules."""

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


def rules_yaml(count: int) -> str:
    return DECLARATIONS + "".join((KEYED if i % 2 else SCANNED).format(i=i)
                                  for i in range(count))


def build_rules(count: int) -> RuleSet:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(rules_yaml(count), encoding="utf-8")
        return load_rules(load_document(path), path.read_bytes())


def messages(count: int) -> list[tuple[str, Message]]:
    """(expected route, message): the last keyed route, the last scanned route, the default."""
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
        return results


SCENARIOS = [RouterDecision()]
