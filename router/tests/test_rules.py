"""Matching and the decision record: what `RuleSet.decide` answers and how it explains it."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from intake.config import load_document
from intake.message import Message, RouteDecision

from .conftest import RulesFrom, make_message

ROUTE = """\
- id: r
  match:
    {match}
  desk: sales
"""


def route_for(match: str) -> str:
    return ROUTE.format(match=match.replace("\n", "\n    "))


def matches(rules_from: RulesFrom, match: str, message: Message) -> bool:
    return rules_from(route_for(match)).decide(message).route == "r"


@pytest.mark.parametrize(("match", "expected"), [
    ("channel: webform", True),
    ("channel: email", False),
    ("channel: [email, webform]", True),
    ("account: contact", True),
    ("account: [support, other]", False),
    ("kind: form_submission", True),
    ("kind: [message, call]", False),
    ("{channel: webform, account: contact, kind: form_submission}", True),
    ("{channel: webform, account: other}", False),
])
def test_route_matches_on_channel_account_and_kind(rules_from: RulesFrom, match: str,
                                                   expected: bool) -> None:
    assert matches(rules_from, match, make_message()) is expected


@pytest.mark.parametrize(("condition", "expected"), [
    ("{field: form.fields.topic, equals: complaint}", True),
    ("{field: form.fields.topic, equals: sales}", False),
    ("{field: form.fields.order, equals: 12345}", True),  # a form's text equals a number
    ("{field: form.fields.topic, not_equals: sales}", True),
    ("{field: form.fields.topic, not_equals: complaint}", False),
    ("{field: form.fields.missing, not_equals: complaint}", True),
    ("{field: form.fields.topic, in: [sales, complaint]}", True),
    ("{field: form.fields.topic, in: [sales, quote]}", False),
    ("{field: subject, contains: 订单}", True),
    ("{field: subject, contains: 退款}", False),
    ("{field: flags, contains: spam_suspect}", True),
    ("{field: flags, contains: bulk}", False),
    ("{field: text, matches: '还没[到来]'}", True),
    ("{field: text, matches: '^退款'}", False),
    ("{field: subject, matches: '(?i)ORDER|订单'}", True),
    ("{field: sender.identities.kind, equals: email}", True),  # any identity
    ("{field: sender.identities.kind, equals: phone}", False),
    ("{field: sender.identities.0.value, matches: '@example\\.com$'}", True),
    ("{field: form.fields.topic, exists: true}", True),
    ("{field: form.fields.nothing, exists: true}", False),
    ("{field: form.fields.nothing, exists: false}", True),
    ("{field: call, exists: true}", False),
    ("{field: flags, exists: true}", True),
    ("{field: form.fields.order, gt: 100}", True),
    ("{field: form.fields.order, lt: 100}", False),
    ("{field: form.fields.topic, gt: 1}", False),  # not a number: never greater
    ("{field: subject, equals: null}", False),
    ("{field: html, equals: null}", True),
])
def test_each_where_operator(rules_from: RulesFrom, condition: str, expected: bool) -> None:
    message = make_message(flags=["spam_suspect"])
    assert matches(rules_from, f"where:\n  - {condition}", message) is expected


def test_nested_repeats_load_and_decide_at_once(rules_from: RulesFrom) -> None:
    # What a backtracking engine takes exponential time on, RE2 runs in time linear in the text.
    for pattern in ("(a+)+$", "(a*)*b", "(.*a){3,}x", "(\\w+\\s?)+$"):
        assert not matches(rules_from, f"where:\n  - {{field: subject, matches: '{pattern}'}}",
                           make_message(subject="a" * 5_000 + "!"))


def test_a_hostile_text_against_dot_star_patterns_decides_correctly(
        rules_from: RulesFrom) -> None:
    # Issue 10: `.*refund.*order` on 10,000 characters of `refund refund …` took about 15 s on
    # `re`; on RE2 it is linear in the text (the figure is in the router-decision benchmark).
    condition = "where:\n  - {field: text, matches: '.*refund.*order'}"
    hostile = ("refund " * 1_500)[:10_000]
    assert not matches(rules_from, condition, make_message(text=hostile))
    assert matches(rules_from, condition, make_message(text=hostile[:9_000] + " order"))
    # A run of such routes shares one screen (a joined search, then RE2's set search).
    rules = rules_from("\n".join(f"- id: r{i}\n  match:\n    where:\n      - {{field: text, "
                                 f"matches: '.*refund.*order{i}'}}\n  desk: sales"
                                 for i in range(8)))
    assert rules.plans["webform"].screens
    assert rules.decide(make_message(text=hostile)).route == "default"
    assert rules.decide(make_message(text=hostile[:9_000] + " order5")).route == "r5"


def test_matches_reads_only_the_first_10000_characters(rules_from: RulesFrom) -> None:
    condition = "where:\n  - {field: text, matches: 'needle'}"
    assert matches(rules_from, condition, make_message(text="x" * 9_990 + "needle"))
    assert not matches(rules_from, condition, make_message(text="x" * 10_000 + "needle"))
    # `$` holds where the read stops: the cut is the end of the subject.
    assert matches(rules_from, "where:\n  - {field: text, matches: 'x$'}",
                   make_message(text="x" * 10_000 + "tail"))


def test_all_conditions_of_a_route_must_hold(rules_from: RulesFrom) -> None:
    match = ("channel: webform\nwhere:\n  - {field: form.fields.topic, equals: complaint}\n"
             "  - {field: subject, contains: 退款}")
    assert not matches(rules_from, match, make_message())
    assert matches(rules_from, match, make_message(subject="退款 订单"))


def test_lists_and_missing_parents_do_not_break_paths(rules_from: RulesFrom) -> None:
    rules = rules_from(route_for("where:\n  - {field: call.from, equals: '+8613800000000'}"))
    assert rules.decide(make_message()).route == "default"  # no call at all
    call = {"call_id": "c1", "from": "+8613800000000"}
    assert rules.decide(make_message(kind="call", call=call)).route == "r"


def test_first_matching_route_wins(rules_from: RulesFrom) -> None:
    rules = rules_from("""
        - id: first
          match: {channel: email}
          desk: sales
        - id: second
          match: {channel: webform}
          desk: aftersales
        - id: third
          match: {channel: webform}
          desk: sales
    """, lint=False)
    decision = rules.decide(make_message())
    assert decision.route == "second"
    assert decision.deliveries[0].desk == "aftersales"


def test_route_without_match_takes_everything(rules_from: RulesFrom) -> None:
    rules = rules_from("- id: all\n  desk: sales\n- id: never\n  desk: aftersales", lint=False)
    decision = rules.decide(make_message(channel="email", idempotency_key="email:a:b"))
    assert decision.route == "all"
    assert decision.explanation is not None
    assert "no conditions" in decision.explanation


def test_default_route_when_nothing_matches(rules_from: RulesFrom) -> None:
    rules = rules_from("- id: mail\n  match: {channel: email}\n  desk: sales")
    decision = rules.decide(make_message())
    assert decision.route == "default"
    assert [(d.desk, d.skill_group, d.role) for d in decision.deliveries] == [
        ("general", "frontline", "owner")]
    assert decision.priority == "normal"
    assert decision.explanation == ("no route matched (1 tried); the default route applies "
                                    "→ desk general, skill group frontline, priority normal")


def test_decision_carries_every_field(rules_from: RulesFrom, tmp_path: Path) -> None:
    rules = rules_from("""
        - id: complaints
          description: complaints from the form
          match:
            channel: webform
            where:
              - {field: form.fields.topic, equals: complaint}
          desk: aftersales
          skill_group: complaints
          priority: high
          category: complaint
          tags: [complaint, vip]
          sla: standard
    """)
    source = (tmp_path / "rules.yaml").read_bytes()
    decision = rules.decide(make_message())
    assert uuid.UUID(decision.decision_id).version == 7
    assert decision.revision == hashlib.sha256(source).hexdigest() == rules.revision
    assert decision.route == "complaints"
    assert decision.mode == "single"
    assert [d.model_dump(exclude={"after", "due"}) for d in decision.deliveries] == [
        {"desk": "aftersales", "skill_group": "complaints", "role": "owner"}]
    assert decision.priority == "high"
    assert decision.category == "complaint"
    assert decision.tags == ["complaint", "vip"]
    assert decision.sla is not None and decision.sla.policy == "standard"
    assert [t.model_dump() for t in decision.tried] == [{
        "route": "complaints", "matched": True, "failed": None,
        "saw": {"channel": "webform", "form.fields.topic": "complaint"}}]
    assert decision.explanation == (
        "route 'complaints' matched because channel == 'webform' and form.fields.topic == "
        "'complaint' (saw channel = 'webform', form.fields.topic = 'complaint') → desk "
        "aftersales, skill group complaints, priority high, "
        "category complaint, SLA standard")
    # The stamped message passes the schema as the bus will carry it.
    routed = make_message(route=decision.model_dump())
    assert Message.model_validate_json(routed.model_dump_json()).route == decision
    assert rules.decide(make_message()).decision_id != decision.decision_id


def test_tried_names_the_first_false_sub_expression(rules_from: RulesFrom) -> None:
    rules = rules_from("""
        - id: mail
          match: {channel: email}
          desk: sales
        - id: billing
          match:
            channel: [webform]
            where:
              - {field: form.fields.order, exists: true}
              - {field: form.fields.topic, equals: billing}
          desk: sales
        - id: keyword
          match:
            where:
              - {field: text, matches: '订单'}
          desk: aftersales
    """)
    decision = rules.decide(make_message(), full=True)
    assert decision.route == "keyword"
    tried = [t.model_dump() for t in decision.tried]
    assert tried == [
        {"route": "mail", "matched": False, "failed": "channel == 'email'",
         "saw": {"channel": "webform"}},
        {"route": "billing", "matched": False, "failed": "form.fields.topic == 'billing'",
         "saw": {"form.fields.topic": "complaint"}},
        {"route": "keyword", "matched": True, "failed": None, "saw": {"text": "我的订单还没到"}},
    ]
    assert decision.explanation == (
        "route 'keyword' matched because text matches '订单' (saw text = '我的订单还没到'), "
        "after 2 earlier routes did not match → desk aftersales, priority normal")
    short = rules.decide(make_message())
    assert [(t.route, t.failed, t.saw) for t in short.tried[:2]] == [
        ("mail", "channel == 'email'", {}), ("billing", "form.fields.topic == 'billing'", {})]


def test_tried_is_capped_but_keeps_the_match(rules_from: RulesFrom) -> None:
    routes = "\n".join(f"- id: r{i}\n  match: {{account: a{i}}}\n  desk: sales"
                       for i in range(30))
    rules = rules_from(routes)
    decision = rules.decide(make_message())
    assert len(decision.tried) == 20
    assert [t.route for t in decision.tried[:2]] == ["r0", "r1"]
    assert decision.tried[-1].route == "default" and decision.tried[-1].matched
    assert decision.tried[0].saw == {}  # the short record: no values for failed routes
    assert len(rules.decide(make_message(), max_tried=5).tried) == 5
    assert rules.decide(make_message(), max_tried=None).tried[0].saw == {"account": "contact"}
    full = rules.decide(make_message(), full=True)
    assert len(full.tried) == 31
    assert full.tried[29].failed == "account == 'a29'"
    assert full.tried[29].saw == {"account": "contact"}


def test_long_values_are_cut_in_saw(rules_from: RulesFrom) -> None:
    rules = rules_from(route_for("where:\n  - {field: text, contains: x}"))
    decision = rules.decide(make_message(text="y" * 1000), full=True)
    assert len(decision.tried[0].saw["text"]) == 201


def test_multi_desk_deliveries(rules_from: RulesFrom) -> None:
    rules = rules_from("""
        - id: both
          mode: multi
          deliveries:
            - {desk: aftersales, skill_group: complaints}
            - {desk: sales}
    """)
    decision = rules.decide(make_message())
    assert decision.mode == "multi"
    assert [(d.desk, d.role) for d in decision.deliveries] == [
        ("aftersales", "owner"), ("sales", "copy")]


def test_primary_secondary_puts_the_primary_first(rules_from: RulesFrom) -> None:
    rules = rules_from("""
        - id: ps
          mode: primary_secondary
          deliveries:
            - {desk: general, role: overflow, after: 10m}
            - {desk: sales, role: primary}
    """)
    decision = rules.decide(make_message())
    assert [(d.desk, d.role) for d in decision.deliveries] == [
        ("sales", "primary"), ("general", "overflow")]
    assert decision.taken_when == "acknowledged"  # the default


def test_the_decision_carries_taken_when(rules_from: RulesFrom) -> None:
    rules = rules_from("""
        - id: ps
          mode: primary_secondary
          taken_when: first_response
          deliveries:
            - {desk: sales}
            - {desk: general, role: overflow, after: 10m}
    """)
    decision = rules.decide(make_message())
    assert decision.taken_when == "first_response"
    assert RouteDecision.model_validate_json(decision.model_dump_json()).taken_when == (
        "first_response")


def test_example_rules_route_a_complaint_to_aftersales() -> None:
    from router.rules import load_rules

    path = Path(__file__).parent.parent / "example-rules.yaml"
    rules = load_rules(load_document(path), path.read_bytes())
    complaint = rules.decide(make_message())
    assert (complaint.route, complaint.deliveries[0].desk, complaint.priority,
            complaint.category) == ("complaints", "aftersales", "high", "complaint")
    sales = rules.decide(make_message(form={"form_id": "contact", "fields": {"topic": "quote"}}))
    assert sales.deliveries[0].desk == "sales"
    other = rules.decide(make_message(form=None, subject="hello"))
    assert other.route == "default" and other.deliveries[0].desk == "general"
    assert [d.name for d in rules.config.desks] == ["综合", "售后", "销售"]


def test_summary_lists_routes_as_people_read_them(rules_from: RulesFrom) -> None:
    rules = rules_from(route_for("where:\n  - {field: subject, contains: 订单}"))
    summary = rules.summary()
    assert summary["revision"] == rules.revision
    assert summary["routes"][0]["when"] == "subject contains '订单'"
    assert summary["routes"][0]["deliveries"] == [
        {"desk": "sales", "skill_group": None, "role": "owner"}]
    assert summary["default_route"]["id"] == "default"
