"""The route index is only a shortcut: it must pick the same route as trying every route."""

from __future__ import annotations

import json
import random

from intake.message import Message
from router.rules import RuleSet

from .conftest import RulesFrom, make_message

CONDITIONS = [
    "{field: form.fields.topic, equals: complaint}",
    "{field: form.fields.topic, in: [sales, quote]}",
    "{field: form.fields.topic, not_equals: sales}",
    "{field: sender.identities.kind, equals: phone}",
    "{field: sender.identities.kind, in: [email, wechat_openid]}",
    "{field: subject, matches: '订单'}",
    "{field: flags, contains: spam_suspect}",
    "{field: form.fields.order, equals: 12345}",
    "{field: form.fields.order, gt: 100}",
    "{field: call, exists: false}",
]
MATCHES = {"channel": ["webform", "[email, webform]"], "account": ["contact", "[support, other]"],
           "kind": ["form_submission", "[message]"]}


def naive_route(rules: RuleSet, message: Message) -> str:
    for route in rules.routes:
        if all(condition.test(message) for condition in route.conditions):
            return route.id
    return "default"


def random_routes(rng: random.Random, count: int) -> str:
    routes = []
    for i in range(count):
        lines = [f"- id: r{i}", "  match:"]
        lines += [f"    {name}: {rng.choice(values)}" for name, values in MATCHES.items()
                  if rng.random() < 0.3]
        where = rng.sample(CONDITIONS, rng.randint(0, 2))
        if where:
            lines.append("    where:")
            lines += [f"      - {c}" for c in where]
        if lines[-1] == "  match:":
            lines.pop()
        lines.append("  desk: sales")
        routes.append("\n".join(lines))
    return "\n".join(routes)


def random_message(rng: random.Random) -> Message:
    channel = rng.choice(["webform", "email", "sdk"])
    identities = rng.sample([{"kind": "email", "value": "a@b.c"},
                             {"kind": "phone", "value": "+8613800000000"},
                             {"kind": "wechat_openid", "value": "o1"}], rng.randint(0, 2))
    fields = {k: v for k, v in (("topic", rng.choice(["complaint", "sales", "quote", "x"])),
                                ("order", rng.choice(["12345", "7", "abc"])))
              if rng.random() < 0.8}
    return make_message(
        channel=channel, idempotency_key=f"{channel}:a:b",
        account=rng.choice(["contact", "support", "x"]),
        kind=rng.choice(["form_submission", "message"]),
        sender={"identities": identities},
        subject=rng.choice(["订单", "hello", None]),
        flags=rng.sample(["spam_suspect", "bulk"], rng.randint(0, 2)),
        form={"form_id": "f", "fields": fields} if rng.random() < 0.8 else None)


def test_indexed_decisions_equal_trying_every_route(rules_from: RulesFrom) -> None:
    rng = random.Random(20260102)
    for _ in range(30):
        rules = rules_from(random_routes(rng, rng.randint(1, 12)), lint=False)
        for _ in range(40):
            message = random_message(rng)
            decision = rules.decide(message, full=True)
            assert decision.route == naive_route(rules, message)
            # Every failed trial names a condition that is indeed false, the first such.
            for trial in decision.tried[:-1]:
                route = next(r for r in rules.routes if r.id == trial.route)
                first = route.failing_condition(message)
                assert trial.failed == route.conditions[first].text
            assert [t.route for t in rules.decide(message).tried] == [
                t.route for t in decision.tried][:19] + ([] if len(decision.tried) <= 19 else
                                                        [decision.route])


def test_the_same_routes_written_as_when_decide_and_explain_alike(
        rules_from: RulesFrom) -> None:
    rng = random.Random(20261124)
    for _ in range(15):
        v1 = rules_from(random_routes(rng, rng.randint(1, 10)), lint=False)
        # Each route's whole condition printed as one `when` (what /rules shows), no `match`.
        rewritten = "\n".join(
            f"- id: {route.id}\n  when: {json.dumps(route.tree.text if route.tree else 'true')}"
            "\n  desk: sales" for route in v1.routes)
        when = rules_from(rewritten, lint=False, name="when.yaml")
        assert [r.key.key if r.key else None for r in when.routes] == [
            r.key.key if r.key else None for r in v1.routes]
        # `channel in [...]` in a `when` files the route under those channels, as v1's match.
        assert [r.channels for r in when.routes] == [r.channels for r in v1.routes]
        for _ in range(30):
            message = random_message(rng)
            old, new = v1.decide(message, full=True), when.decide(message, full=True)
            assert new.route == old.route
            assert [(t.route, t.failed, t.saw) for t in new.tried] == [
                (t.route, t.failed, t.saw) for t in old.tried]
