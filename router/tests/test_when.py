"""The `when` language: parsing, value semantics, explanations, v1 `where` meaning the same."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intake.calendars import CalendarSpec, compile_calendar
from intake.message import Message
from router.compile import compile_condition, compile_where, condition_node
from router.evaluate import CUSTOMER, ExprError, compile_all, compile_node, failing_node, saw_of
from router.expr import Node, ParseError, parse, to_source, unescape
from router.models import Condition

from .conftest import RulesFrom, make_message

OFFICE, _ = compile_calendar(CalendarSpec.model_validate({
    "id": "office", "timezone": "Asia/Shanghai", "hours": {"mon-fri": ["09:00-18:00"]},
    "holidays": ["2026-01-01"], "workdays": ["2026-01-04"]}))
CALENDARS = {"office": OFFICE}


def message(**fields: Any) -> Message:
    base: dict[str, Any] = {
        "flags": ["spam_suspect", "signed"],
        "sender": {"name": "李雷", "identities": [
            {"kind": "email", "value": "Li@Example.com"},
            {"kind": "phone", "value": "+8613800000000"}]},
        "form": {"form_id": "contact", "fields": {
            "topic": "complaint", "order": "12345", "amount": 80, "count": "3",
            "tags": ["vip", "new"], "nested": {"a": {"b": "deep"}}, "empty": [],
            "nothing": None, "path": "C:\\temp", "note": "say \"hi\""}},
        # 2026-01-05 10:30 in Shanghai, a Monday
        "received_at": datetime(2026, 1, 5, 2, 30, tzinfo=UTC),
    }
    base.update(fields)
    return make_message(**base)


MSG = message()


def holds(source: str, msg: Message = MSG, customer: dict[str, Any] | None = None) -> bool:
    fn = compile_node(parse(source), CALENDARS)
    token = CUSTOMER.set(customer)
    try:
        return fn(msg) is True
    finally:
        CUSTOMER.reset(token)


CASES = [
    # equality, words as text
    ("form.fields.topic == 'complaint'", True), ("form.fields.topic == 'sales'", False),
    ("form.fields.topic != 'sales'", True), ("form.fields.topic != 'complaint'", False),
    ("form.fields.order == 12345", True), ("form.fields.order == '12345'", True),
    ("form.fields.amount == 80", True), ("form.fields.amount == '80'", True),
    ("form.fields.amount == 80.0", True), ("form.fields.count == 3", True),
    ("form.fields.missing == 'x'", False), ("form.fields.missing != 'x'", True),
    ("form.fields.missing == null", True), ("form.fields.nothing == null", True),
    ("form.fields.empty == null", True), ("form.fields.topic == null", False),
    ("form.fields.topic != null", True), ("html == null", True), ("subject == null", False),
    ("channel == 'webform'", True), ("channel == 'email'", False),
    ("account == 'contact'", True), ("kind == 'form_submission'", True),
    ("text == '我的订单还没到'", True), ("subject == '订单问题'", True),
    ("subject == '订单'", False),
    # fan-out through lists
    ("sender.identities.kind == 'phone'", True), ("sender.identities.kind == 'wechat_openid'",
                                                  False),
    ("sender.identities.0.kind == 'email'", True), ("sender.identities.1.kind == 'email'",
                                                    False),
    ("sender.identities.5.kind == 'email'", False),
    ("form.fields.tags == 'vip'", True), ("form.fields.tags == 'old'", False),
    ("flags == 'signed'", True),
    # sender shortcuts
    ("sender.email == 'Li@Example.com'", True), ("sender.phone == '+8613800000000'", True),
    ("sender.wechat_openid == null", True), ("sender.sdk_user exists", False),
    ("lower(sender.email) == 'li@example.com'", True),
    # in / not in
    ("form.fields.topic in ['sales', 'complaint']", True),
    ("form.fields.topic in ['sales', 'quote']", False),
    ("form.fields.topic not in ['sales', 'quote']", True),
    ("form.fields.topic not in ['complaint']", False),
    ("form.fields.order in [12345, 1]", True), ("form.fields.amount in ['80']", True),
    ("form.fields.missing in ['a', null]", True), ("form.fields.missing in ['a']", False),
    ("form.fields.missing not in ['a']", True), ("channel in ['email', 'webform']", True),
    ("sender.identities.kind in ['phone']", True), ("form.fields.tags in ['new']", True),
    ("'vip' in form.fields.tags", True), ("'old' in form.fields.tags", False),
    # contains: substring, list element, object key
    ("subject contains '订单'", True), ("subject contains '退款'", False),
    ("text contains '还没'", True), ("flags contains 'signed'", True),
    ("flags contains 'bulk'", False), ("form.fields contains 'topic'", True),
    ("form.fields contains 'nope'", False), ("form.fields.amount contains '8'", False),
    ("form.fields.missing contains 'x'", False), ("form.fields.tags contains 'vip'", True),
    ("sender.identities.kind contains 'phone'", True),
    # has: list membership
    ("flags has 'signed'", True), ("flags has 'bounce'", False),
    ("form.fields.tags has 'new'", True), ("form.fields.topic has 'complaint'", True),
    ("form.fields.missing has 'x'", False), ("form.fields.count has 3", True),
    # ordering
    ("form.fields.amount > 50", True), ("form.fields.amount > 80", False),
    ("form.fields.amount >= 80", True), ("form.fields.amount < 100", True),
    ("form.fields.amount <= 79", False), ("form.fields.order > 100", True),
    ("form.fields.count >= '3'", True), ("form.fields.topic > 1", False),
    ("form.fields.topic < 1", False), ("form.fields.topic > 'a'", True),
    ("form.fields.topic < 'b'", False), ("form.fields.missing > 0", False),
    ("form.fields.missing < 0", False), ("form.fields.tags > 'a'", True),
    ("form.fields.nested > 1", False), ("len(text) > 3", True), ("len(text) == 7", True),
    ("len(form.fields.tags) == 2", True), ("len(form.fields.missing) == 0", True),
    ("len(flags) >= 2", True),
    # matches (RE2)
    ("text matches '还没[到来]'", True), ("text matches '^退款'", False),
    ("subject matches '(?i)ORDER|订单'", True), ("sender.email matches '(?i)@example\\.com$'",
                                                True),
    ("form.fields.order matches '^\\d{5}$'", True), ("form.fields.order matches '\\d{6}'",
                                                     False),
    ("form.fields.amount matches '80'", False), ("form.fields.missing matches '.'", False),
    ("form.fields.tags matches '^v'", True), ("text matches '\\p{Han}+'", True),
    ("sender.identities.value matches '^\\+86'", True),
    # exists
    ("form.fields.topic exists", True), ("form.fields.nothing exists", False),
    ("form.fields.empty exists", False), ("form.fields.missing exists", False),
    ("call exists", False), ("flags exists", True), ("form.fields.nested.a.b exists", True),
    ("form.fields.nested.a.c exists", False), ("not form.fields.missing exists", True),
    # and / or / not, precedence
    ("channel == 'webform' and form.fields.topic == 'complaint'", True),
    ("channel == 'webform' and form.fields.topic == 'sales'", False),
    ("channel == 'email' or form.fields.topic == 'complaint'", True),
    ("channel == 'email' or form.fields.topic == 'sales'", False),
    ("not channel == 'email'", True), ("not channel == 'webform'", False),
    ("not not channel == 'webform'", True),
    ("channel == 'email' or channel == 'webform' and form.fields.topic == 'complaint'", True),
    ("(channel == 'email' or channel == 'webform') and form.fields.topic == 'sales'", False),
    ("channel == 'email' and channel == 'webform' or true", True),
    ("not channel == 'email' and not channel == 'sdk'", True),
    ("not (channel == 'email' or channel == 'webform')", False),
    ("true", True), ("false", False), ("not false", True), ("true and false", False),
    ("TRUE AND channel == 'webform'", True), ("False OR channel == 'email'", False),
    ("channel == 'webform' AND form.fields.topic IN ['complaint'] Or false", True),
    ("NOT channel == 'email'", True), ("form.fields.topic NOT IN ['x']", True),
    ("subject CONTAINS '订单'", True), ("flags HAS 'signed'", True),
    ("text MATCHES '订单'", True), ("call EXISTS", False),
    # escapes
    ("form.fields.path == 'C:\\\\temp'", True), ("form.fields.note == 'say \"hi\"'", True),
    ("form.fields.note == \"say \\\"hi\\\"\"", True), ("subject == '\\u8ba2\\u5355问题'", True),
    ("text contains '\\u8ba2'", True), ("form.fields.topic == 'compl\\x'", False),
    # Chinese text and nested form fields
    ("sender.name == '李雷'", True), ("sender.name contains '李'", True),
    ("form.fields.nested.a.b == 'deep'", True), ("form.fields.nested.a == null", False),
    # calendar functions read received_at (Monday 10:30 in Shanghai)
    ("in_business_hours('office')", True), ("is_workday('office')", True),
    ("is_holiday('office')", False), ("local_time('office') == '10:30'", True),
    ("local_weekday('office') == 'mon'", True), ("local_date('office') == '2026-01-05'", True),
    ("local_time('office') >= '09:00' and local_time('office') < '12:00'", True),
    ("not in_business_hours('office')", False),
    # lower
    ("lower(subject) == '订单问题'", True), ("lower(form.fields.tags) == 'vip'", True),
    ("lower(form.fields.amount) == 80", True),
    # literals on the left, lists
    ("'complaint' == form.fields.topic", True), ("3 == form.fields.count", True),
    ("[1, 2] == null", False), ("null == form.fields.missing", True),
    # key against key
    ("form.fields.count == form.fields.count", True), ("channel == account", False),
]


@pytest.mark.parametrize(("source", "expected"), CASES)
def test_language(source: str, expected: bool) -> None:
    assert holds(source) is expected


def test_there_are_at_least_150_cases() -> None:
    assert len(CASES) >= 150


CUSTOMER_CASES: list[tuple[str, dict[str, Any] | None, bool]] = [
    ("customer.known", {"known": True}, True), ("customer.known", None, False),
    ("customer.vip_level >= 3", {"vip_level": 5}, True),
    ("customer.vip_level >= 3", {"vip_level": 1}, False),
    ("customer.vip_level >= 3", None, False), ("customer.language == 'zh-CN'",
                                               {"language": "zh-CN"}, True),
    ("customer.fields.tier == 'gold'", {"fields": {"tier": "gold"}}, True),
    ("customer.fields.tier == null", {"fields": {}}, True),
    ("customer.lookup == 'hit'", {"lookup": "hit"}, True),
    ("customer.open_tickets_count > 0", {"open_tickets_count": 2}, True),
]


@pytest.mark.parametrize(("source", "customer", "expected"), CUSTOMER_CASES)
def test_customer_keys(source: str, customer: dict[str, Any] | None, expected: bool) -> None:
    assert holds(source, customer=customer) is expected


def test_calendar_functions_read_received_at_not_the_clock() -> None:
    saturday_night = message(received_at=datetime(2026, 1, 3, 14, 0, tzinfo=UTC))  # 22:00
    assert not holds("in_business_hours('office')", saturday_night)
    assert holds("local_weekday('office') == 'sat'", saturday_night)
    makeup_sunday = message(received_at=datetime(2026, 1, 4, 2, 0, tzinfo=UTC))
    assert holds("is_workday('office') and in_business_hours('office')", makeup_sunday)
    new_year = message(received_at=datetime(2026, 1, 1, 2, 0, tzinfo=UTC))
    assert holds("is_holiday('office') and not is_workday('office')", new_year)
    # Local midnight against the UTC date: 2026-01-04 17:00 UTC is Monday 01:00 in Shanghai.
    late = message(received_at=datetime(2026, 1, 4, 17, 0, tzinfo=UTC))
    assert holds("local_date('office') == '2026-01-05'", late)


def test_a_5_mib_text_is_read_within_the_bound() -> None:
    huge = message(text="x" * (5 * 1024 * 1024) + "投诉")
    assert not holds("text matches '投诉'", huge)  # past the first 10,000 characters
    assert holds("text contains '投诉'", huge)


@pytest.mark.parametrize("v1", [
    {"field": "form.fields.topic", "equals": "complaint"},
    {"field": "form.fields.topic", "equals": "sales"},
    {"field": "form.fields.order", "equals": 12345},
    {"field": "form.fields.topic", "not_equals": "sales"},
    {"field": "form.fields.missing", "not_equals": "complaint"},
    {"field": "form.fields.topic", "in": ["sales", "complaint"]},
    {"field": "form.fields.topic", "in": ["sales", None]},
    {"field": "subject", "contains": "订单"},
    {"field": "flags", "contains": "spam_suspect"},
    {"field": "flags", "contains": "bulk"},
    {"field": "text", "matches": "还没[到来]"},
    {"field": "subject", "matches": "(?i)ORDER|订单"},
    {"field": "sender.identities.kind", "equals": "phone"},
    {"field": "sender.identities.0.value", "matches": "@Example\\.com$"},
    {"field": "form.fields.topic", "exists": True},
    {"field": "form.fields.nothing", "exists": False},
    {"field": "call", "exists": True},
    {"field": "form.fields.order", "gt": 100},
    {"field": "form.fields.order", "lt": 100},
    {"field": "form.fields.amount", "gt": 79.5},
    {"field": "form.fields.topic", "gt": 1},
    {"field": "subject", "equals": None},
    {"field": "html", "equals": None},
    {"field": "form.fields.path", "equals": "C:\\temp"},
    {"field": "form.fields.note", "contains": "\"hi\""},
])
def test_every_where_condition_written_both_ways_has_one_answer(v1: dict[str, Any]) -> None:
    condition = Condition.model_validate(v1)
    as_where = compile_where(condition).test(MSG)
    text = condition_node(condition).text
    assert holds(text) is as_where, text
    assert to_source(parse(text)) == text  # what explanations print parses back


@pytest.mark.parametrize(("source", "column", "reason"), [
    ("channel ==", 11, "expected a value"),
    ("channel == 'webform' and", 25, "expected a value"),
    ("(channel == 'x'", 16, "expected ')'"),
    ("channel = 'x'", 9, "unexpected '='"),
    ("channel == 'x", 12, "unclosed quote"),
    ("nope('x')", 1, "unknown function 'nope'"),
    ("lower('a', 'b')", 1, "takes 1 argument"),
    ("in_business_hours(channel)", 19, "takes a calendar id in quotes"),
    ("text matches channel", 14, "matches takes a pattern in quotes"),
    ("channel in 'x'", 12, "takes a list"),
    ("", 1, "empty expression"),
    ("channel == 'a' 'b'", 16, "unexpected"),
    ("[channel] == 1", 2, "a list holds literals only"),
])
def test_parse_errors_name_their_column(source: str, column: int, reason: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse(source)
    assert caught.value.position + 1 == column
    assert reason in str(caught.value)


@pytest.mark.parametrize(("source", "code", "text"), [
    ("custmer.vip_level > 1", "unknown-key", "did you mean 'customer.vip_level'?"),
    ("subjct == 'x'", "unknown-key", "did you mean 'subject'?"),
    ("route.desk == 'x'", "unknown-key", "unknown key 'route.desk'"),
    ("in_business_hours('mars')", "unknown-calendar", "unknown calendar 'mars'"),
    ("text matches '(a)\\1'", "bad-regex", "not a pattern RE2 can run"),
    ("text matches 'a(?=b)'", "bad-regex", "not a pattern RE2 can run"),
])
def test_compile_errors_have_codes(source: str, code: str, text: str) -> None:
    with pytest.raises(ExprError) as caught:
        compile_node(parse(source), CALENDARS)
    assert caught.value.code == code
    assert text in str(caught.value)


def test_escapes_keep_other_backslashes_for_the_regex_engine() -> None:
    assert unescape(r"\bSF\d{9}") == r"\bSF\d{9}"
    assert unescape(r"a\\b\'c\"d\ne\tf\u4e2d") == "a\\b'c\"d\ne\tf中"
    assert holds(r"subject matches '\bSF\d{3}'", message(subject="运单 SF123 到了"))


@pytest.mark.parametrize(("source", "failed", "saw"), [
    ("channel == 'webform' and form.fields.topic == 'sales' and text contains 'x'",
     "form.fields.topic == 'sales'", {"form.fields.topic": "complaint"}),
    ("channel == 'webform' and (subject contains 'x' or text contains 'y')",
     "subject contains 'x' or text contains 'y'",
     {"subject": "订单问题", "text": "我的订单还没到"}),
    ("not channel == 'webform'", "not channel == 'webform'", {"channel": "webform"}),
    ("( channel == 'email' )", "channel == 'email'", {"channel": "webform"}),
    ("channel == 'webform' and not in_business_hours('office')",
     "not in_business_hours('office')", {"in_business_hours('office')": True}),
    ("channel == 'webform' and (form.fields.topic == 'complaint' and flags has 'bulk')",
     "flags has 'bulk'", {"flags": ["spam_suspect", "signed"]}),
])
def test_failed_is_the_first_false_sub_expression(source: str, failed: str,
                                                  saw: dict[str, Any]) -> None:
    tree = parse(source)
    fns = compile_all(tree, CALENDARS)
    node = failing_node(tree, fns, MSG)
    assert node.text == failed
    assert saw_of(node, fns, MSG) == saw
    condition = compile_condition(tree, CALENDARS)
    assert not condition.test(MSG)


def test_when_and_match_both_hold_and_failed_reads_as_expressions(
        rules_from: RulesFrom) -> None:
    rules = rules_from("""
        - id: store
          match: {channel: webform}
          when: "text contains '投诉' or text contains '差评'"
          desk: sales
        - id: vip
          when: "customer.vip_level >= 3"
          desk: aftersales
    """)
    assert rules.decide(make_message(text="我要投诉")).route == "store"
    assert rules.decide(make_message(channel="email", idempotency_key="email:a:b",
                                     text="我要投诉")).route == "default"
    full = rules.decide(make_message(), {"vip_level": 4}, max_tried=None)
    assert full.route == "vip"
    assert full.tried[0].failed == "text contains '投诉' or text contains '差评'"
    assert full.tried[0].saw == {"text": "我的订单还没到"}
    assert full.tried[1].saw == {"customer.vip_level": 4}
    assert full.customer is not None and full.customer.lookup == "hit"
    miss = rules.decide(make_message(), max_tried=None)
    assert miss.route == "default" and miss.customer is not None
    assert miss.customer.lookup == "miss"
    assert rules.routes[0].reads_customer is False and rules.routes[1].reads_customer


def test_when_errors_refuse_the_file_with_line_and_column(rules_from: RulesFrom) -> None:
    from intake.errors import ConfigInvalid

    with pytest.raises(ConfigInvalid) as caught:
        rules_from("- id: r\n  when: \"custmer.vip_level > 1\"\n  desk: sales")
    (problem,) = caught.value.problems
    assert "routes.0.when: unknown key 'custmer.vip_level'; did you mean " \
           "'customer.vip_level'? at column 1" in problem
    assert ":16:" in problem  # the line of `when:` in the written file


# -- hypothesis: print ∘ parse round-trips, and the compiled closures agree with a tree walk --

KEYS = st.sampled_from(["channel", "subject", "text", "form.fields.topic", "form.fields.amount",
                        "flags", "sender.identities.kind", "form.fields.tags"])
WORDS = st.sampled_from(["webform", "complaint", "订单", "signed", "vip", "80", "a'b", "x\\y"])
LITERALS = st.one_of(WORDS, st.integers(-5, 100), st.sampled_from([None, True, False]))


def _lit(value: Any) -> Node:
    return Node("literal", "", value)


def _compare(op: str, key: str, value: Any) -> Node:
    right = (Node("list", "", tuple(value), tuple(_lit(v) for v in value))
             if isinstance(value, list) else _lit(value))
    return Node("compare", "", op, (Node("key", key, key), right))


ATOMS = st.one_of(
    st.builds(_compare, st.sampled_from(["==", "!=", "<", ">=", "contains", "has"]), KEYS,
              LITERALS),
    st.builds(_compare, st.sampled_from(["in", "not in"]), KEYS, st.lists(WORDS, max_size=3)),
    st.builds(lambda k: Node("exists", "", None, (Node("key", k, k),)), KEYS),
)
TREES = st.recursive(ATOMS, lambda inner: st.one_of(
    st.builds(lambda c: Node("not", "", None, (c,)), inner),
    st.builds(lambda cs: Node("and", "", None, tuple(cs)), st.lists(inner, min_size=2,
                                                                    max_size=3)),
    st.builds(lambda cs: Node("or", "", None, tuple(cs)), st.lists(inner, min_size=2,
                                                                   max_size=3)),
), max_leaves=8)


def _flat(node: Node, kind: str) -> list[Node]:
    if node.kind != kind:
        return [node]
    return [leaf for child in node.children for leaf in _flat(child, kind)]


def _shape(node: Node) -> Any:
    # `a and (b and c)` parses flat: compare shapes with nested chains flattened.
    members = ([c for child in node.children for c in _flat(child, node.kind)]
               if node.kind in ("and", "or") else list(node.children))
    children = [_shape(c) for c in members]
    value = node.value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return (node.kind, value if node.kind != "list" else tuple(value), tuple(children))


def _walk(node: Node, msg: Message) -> bool:
    """A tree interpreter independent of the closures' short-cuts."""
    if node.kind == "and":
        return all(_walk(c, msg) for c in node.children)
    if node.kind == "or":
        return any(_walk(c, msg) for c in node.children)
    if node.kind == "not":
        return not _walk(node.children[0], msg)
    return compile_node(node, {})(msg) is True


@settings(max_examples=150, deadline=None)
@given(TREES)
def test_parse_of_print_round_trips_and_evaluation_agrees(tree: Node) -> None:
    source = to_source(tree)
    parsed = parse(source)
    assert _shape(parsed) == _shape(tree)
    assert to_source(parsed) == source
    assert (compile_node(parsed, {})(MSG) is True) == _walk(tree, MSG)


def test_deep_form_fields_and_type_mismatches_are_routed_and_shown(
        rules_from: RulesFrom) -> None:
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(3000):
        cursor["a"] = {}
        cursor = cursor["a"]
    rules = rules_from("""
        - id: keys
          when: "form.fields contains 'topic'"
          desk: sales
        - id: number
          when: "form.fields.amount contains 'x' or form.fields.amount matches 'x'"
          desk: aftersales
    """)
    decision = rules.decide(make_message(form={"form_id": "x", "fields": {"a": deep,
                                                                          "amount": 5}}),
                            max_tried=None)
    assert decision.route == "default"
    shown = decision.tried[0].saw["form.fields"]["a"]
    for _ in range(7):
        shown = shown["a"]
    assert shown == "…"  # cut at 8 levels
    assert decision.tried[1].saw == {"form.fields.amount": 5}
