"""The decision record of issue 16: label, clock, customer, SLA due times and warnings, the
escalation schedule, overflow `after`, and split stickiness."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from intake.config import load_document
from intake.message import Message
from router.plan import split_bucket
from router.rules import RuleSet, load_rules

from .conftest import RulesFrom, make_message

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "intake.example.yaml"


@pytest.fixture(scope="module")
def example() -> RuleSet:
    return load_rules(load_document(EXAMPLE), EXAMPLE.read_bytes())


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def contact(text: str, received_at: str = "2026-01-05T02:00:00Z", **fields: object) -> Message:
    return make_message(text=text, form={"form_id": "contact", "fields": {"topic": "enquiry"}},
                        received_at=at(received_at), **fields)


def test_a_complaint_goes_to_the_hotline_with_its_sla(example: RuleSet) -> None:
    decision = example.decide(contact("我要投诉你们门店的服务"))
    assert (decision.route, decision.deliveries[0].desk, decision.deliveries[0].skill_group,
            decision.priority, decision.category) == (
        "complaints", "complaints", "sg_hotline", "high", "complaint")
    assert decision.label == "retail-2026.1"
    assert decision.clock == at("2026-01-05T02:00:00Z")
    sla = decision.sla
    assert sla is not None and sla.policy == "complaint" and not sla.business_hours
    assert sla.first_response_due == at("2026-01-05T02:30:00Z")
    assert sla.resolution_due == at("2026-01-07T02:00:00Z")
    assert [(w.target, w.at) for w in sla.warnings] == [
        ("first_response", at("2026-01-05T02:20:00Z")),
        ("resolution", at("2026-01-07T01:50:00Z"))]
    assert decision.escalation is None


def test_a_warned_complaint_carries_its_planned_timeline(example: RuleSet) -> None:
    decision = example.decide(contact("我要投诉你们门店的服务，否则找媒体曝光"))
    assert decision.route == "warned_complaint" and decision.priority == "urgent"
    plan = decision.escalation
    assert plan is not None and plan.timeline == "warned_complaint"
    assert plan.deadline == at("2026-01-07T02:00:00Z")  # 处理 48 小时
    assert plan.hard_deadline is None
    # The service standard's steps, each planned from the one before's due time, every
    # one on the complaints desk.
    assert [(s.id, s.target.desk if s.target else None,
             s.target.skill_group if s.target else None, s.due) for s in plan.steps] == [
        ("supervisor_pickup", "complaints", "sg_hotline_supervisors", at("2026-01-05T02:30:00Z")),
        ("handback_to_store", "complaints", "sg_hotline_supervisors",
         at("2026-01-05T03:30:00Z")),
        ("store_centre", "complaints", "sg_store_service", at("2026-01-05T04:00:00Z")),
        ("store_manager", "complaints", "sg_store_managers", at("2026-01-05T05:00:00Z")),
        ("executives", "complaints", "sg_executives", at("2026-01-05T08:00:00Z")),
        ("hotline_handling", "complaints", "sg_hotline", at("2026-01-05T08:30:00Z")),
        ("closing", "complaints", "sg_hotline", at("2026-01-06T08:30:00Z"))]


def test_business_hours_sla_counts_working_time_only(example: RuleSet) -> None:
    # Friday 2026-01-09 17:00 in Shanghai: 1 hour left that day, the weekend off.
    decision = example.decide(contact("发票", "2026-01-09T09:00:00Z"))
    assert decision.route == "default"
    sla = decision.sla
    assert sla is not None and sla.business_hours and sla.calendar == "cn_office"
    assert sla.first_response_due == at("2026-01-12T02:00:00Z")  # Monday 10:00
    # warn_at 80% of 2h = 96 min of working time: 1 h on Friday, 36 min on Monday.
    assert sla.warnings[0].at == at("2026-01-12T01:36:00Z")
    # Received in the lunch break: counting starts at 13:30.
    lunch = example.decide(contact("发票", "2026-01-05T04:15:00Z")).sla
    assert lunch is not None and lunch.first_response_due == at("2026-01-05T07:30:00Z")


def test_overflow_deliveries_carry_after_and_their_due_time(example: RuleSet) -> None:
    message = make_message(account="store_sh_feedback", text="店员态度差，给差评",
                           received_at=at("2026-03-02T02:00:00Z"))
    decision = example.decide(message)
    assert decision.route == "store_complaint" and decision.mode == "primary_secondary"
    assert [(d.desk, d.role, d.after, d.due) for d in decision.deliveries] == [
        ("store_sh", "primary", None, None),
        ("regional", "overflow", "10m", at("2026-03-02T02:10:00Z")),
        ("complaints", "overflow", "30m", at("2026-03-02T02:30:00Z"))]  # cumulative
    assert decision.escalation is not None
    assert decision.escalation.timeline == "complaint_warning"


def test_split_picks_by_sha256_of_the_sticky_key(rules_from: RulesFrom) -> None:
    rules = rules_from("""
        - id: split
          mode: split
          sticky_by: sender.email
          deliveries:
            - {desk: sales, weight: 30}
            - {desk: aftersales, weight: 70}
    """)
    for email in ("a@x.cn", "b@x.cn", "c@x.cn", "李@x.cn"):
        message = make_message(sender={"identities": [{"kind": "email", "value": email}]})
        bucket = int.from_bytes(hashlib.sha256(email.encode()).digest()[:8], "big") % 100
        assert split_bucket(email) == bucket
        decision = rules.decide(message)
        expected = "sales" if bucket < 30 else "aftersales"
        assert [(d.desk, d.role) for d in decision.deliveries] == [(expected, "owner")]
        # Sticky: the same value, the same desk, every time.
        assert all(rules.decide(message).deliveries[0].desk == expected for _ in range(3))
    # Without the key's value: the idempotency key decides.
    bare = make_message(sender={"identities": []}, idempotency_key="webform:contact:k1")
    bucket = split_bucket("webform:contact:k1")
    assert rules.decide(bare).deliveries[0].desk == ("sales" if bucket < 30 else "aftersales")
    # Weights hold over many keys.
    desks = Counter(rules.decide(make_message(idempotency_key=f"webform:contact:{i}",
                                              sender={"identities": []})).deliveries[0].desk
                    for i in range(2000))
    assert 500 < desks["sales"] < 700


def test_skills_pick_the_first_group_having_them_all(rules_from: RulesFrom) -> None:
    declarations = """\
desks:
  - {id: support, name: 支持, default_skill_group: sg_l1}
skill_groups:
  - {id: sg_l1, desk: support, skills: [zh]}
  - {id: sg_en, desk: support, skills: [en, zh]}
  - {id: sg_en2, desk: support, skills: [en, zh, vip]}
"""
    rules = rules_from("""
        - id: english
          when: "text matches '(?i)hello'"
          desk: support
          skills: [en]
        - id: klingon
          desk: support
          skills: [tlh]
    """, declarations=declarations, default="default_route: {desk: support}\n")
    assert rules.decide(make_message(text="Hello")).deliveries[0].skill_group == "sg_en"
    # No group has the skill: the desk's default group (and lint warns).
    assert rules.decide(make_message(text="x")).deliveries[0].skill_group == "sg_l1"
    assert any("no group of desk 'support' has skills ['tlh']" in w for w in rules.warnings)


def test_customer_snapshot_is_recorded(example: RuleSet) -> None:
    vip = example.decide(contact("退货"), {"id": "c1", "vip_level": 5, "language": "zh-CN",
                                         "tickets_count": 3, "open_tickets_count": 1})
    assert vip.route == "vip"
    assert vip.customer is not None and vip.customer.model_dump() == {
        "lookup": "hit", "id": "c1", "vip_level": 5, "language": "zh-CN", "tickets_count": 3,
        "open_tickets_count": 1}
    timeout = example.decide(contact("退货"), None, lookup="timeout")
    assert timeout.route == "default" and timeout.customer is not None
    assert timeout.customer.lookup == "timeout" and timeout.customer.tickets_count is None
    # The record passes the schema as the bus carries it.
    routed = make_message(route=vip.model_dump(mode="json"))
    assert Message.model_validate_json(routed.model_dump_json()).route == vip


def test_summary_shows_label_calendars_escalations_and_strategies(example: RuleSet) -> None:
    summary = example.summary()
    assert summary["label"] == "retail-2026.1"
    assert [c["id"] for c in summary["calendars"]] == ["cn_office", "always"]
    assert [e["id"] for e in summary["escalations"]] == ["warned_complaint",
                                                         "complaint_warning"]
    assert summary["strategies"]["sg_hotline"] == "least_loaded"
    assert summary["strategies"]["sg_aftersales_l1"] == "least_loaded"
    store = next(r for r in summary["routes"] if r["id"] == "store_complaint")
    assert store["when"] == "account in ['store_sh_feedback', 'wx1111111111111111'] and " \
        "(text contains '投诉' or text contains '差评')"
    assert store["deliveries"][1] == {"desk": "regional", "skill_group": "sg_regional",
                                      "role": "overflow", "after": 600}


def test_calendar_functions_route_after_hours_as_of_received_at(example: RuleSet) -> None:
    saturday_night = make_message(channel="wechat", account="wx2c2769f8efd9abc2",
                                  idempotency_key="wechat:wx:1", kind="message", form=None,
                                  text="在吗", received_at=at("2026-01-10T13:00:00Z"))
    assert example.decide(saturday_night).route == "after_hours"
    # 2026-01-04 is a Sunday but a 调休 working day: not after hours at 10:00.
    make_up_day = saturday_night.model_copy(update={"received_at": at("2026-01-04T02:00:00Z")})
    assert example.decide(make_up_day).route == "default"
    # Received at 2026-01-01 10:00 (元旦): after hours, whatever the router's clock says.
    new_year = saturday_night.model_copy(update={"received_at": at("2026-01-01T02:00:00Z")})
    assert example.decide(new_year).route == "after_hours"


def test_split_without_sticky_by_uses_the_idempotency_key(rules_from: RulesFrom) -> None:
    rules = rules_from("""
        - id: split
          mode: split
          deliveries:
            - {desk: sales, weight: 50}
            - {desk: aftersales, weight: 50}
    """)
    decision = rules.decide(make_message(idempotency_key="webform:contact:k7"))
    expected = "sales" if split_bucket("webform:contact:k7") < 50 else "aftersales"
    assert [(d.desk, d.role) for d in decision.deliveries] == [(expected, "owner")]


@pytest.mark.parametrize(("routes", "problem"), [
    ("- id: s\n  mode: split\n  sticky_by: sender.emial\n  deliveries:\n"
     "    - {desk: sales, weight: 50}\n    - {desk: aftersales, weight: 50}",
     "routes.0.sticky_by: unknown key 'sender.emial'; did you mean 'sender.email'?"),
    ("- id: s\n  sticky_by: sender.email\n  desk: sales",
     "routes.0.sticky_by: sticky_by belongs to mode split"),
])
def test_sticky_by_mistakes(rules_from: RulesFrom, routes: str, problem: str) -> None:
    from intake.errors import ConfigInvalid

    with pytest.raises(ConfigInvalid) as caught:
        rules_from(routes)
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_a_business_hours_policy_on_a_closed_calendar_is_refused(
        rules_from: RulesFrom) -> None:
    from intake.errors import ConfigInvalid

    declarations = """\
desks:
  - {id: sales, name: 销售}
calendars:
  - {id: never, timezone: Asia/Shanghai}
sla_policies:
  - {id: slow, business_hours: true, calendar: never, first_response: 1h}
"""
    with pytest.raises(ConfigInvalid) as caught:
        rules_from("- id: r\n  desk: sales\n  sla: slow", declarations=declarations,
                   default="default_route: {desk: sales}\n")
    assert "calendar 'never' has no working hours" in caught.value.problems[0]
