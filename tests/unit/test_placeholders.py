"""The placeholder renderer of quick replies and auto replies: one pass, fallbacks, and a
placeholder without a value named, never rendered as a hole."""

from __future__ import annotations

import pytest

from intake.placeholders import Unresolved, placeholders, problems, render

GREET = '{{customer.name | default: "您"}}好，我是{{agent.name}}，很高兴为您服务。'
TRACKING = "您的订单 {{ticket.fields.order_no}} 已发货，快递单号 {{input.tracking_no}}。"


def test_values_and_fallbacks() -> None:
    assert render(GREET, {"customer.name": "王芳", "agent.name": "李娜"}) == (
        "王芳好，我是李娜，很高兴为您服务。")
    assert render(GREET, {"agent.name": "李娜"}) == "您好，我是李娜，很高兴为您服务。"
    assert render(GREET, {"customer.name": "", "agent.name": "李娜"}).startswith("您好")
    assert render("{{ ticket.number }}", {"ticket.number": 10042}) == "10042"


def test_a_placeholder_without_value_or_default_is_named_never_left_as_a_hole() -> None:
    with pytest.raises(Unresolved) as caught:
        render("您好 {{customer.name}}，单号 {{input.tracking_no}} {{customer.name}}", {})
    assert caught.value.names == ["customer.name", "input.tracking_no"]
    with pytest.raises(Unresolved) as caught:
        render(TRACKING, {"ticket.fields.order_no": "20261001-0001"})
    assert caught.value.names == ["input.tracking_no"]
    assert render(TRACKING, {"ticket.fields.order_no": "20261001-0001",
                             "input.tracking_no": "SF123"}) == (
        "您的订单 20261001-0001 已发货，快递单号 SF123。")


def test_one_pass_a_value_is_never_read_as_a_template() -> None:
    text = render(GREET, {"customer.name": "{{agent.name}}", "agent.name": "李娜"})
    assert text == "{{agent.name}}好，我是李娜，很高兴为您服务。"
    assert render("{{customer.name}}", {"customer.name": "{0} %s ${x} {{"}) == "{0} %s ${x} {{"


def test_text_that_is_not_a_placeholder_is_kept() -> None:
    assert render("a {b} {{ not closed", {}) == "a {b} {{ not closed"
    assert [p.name for p in placeholders(GREET)] == ["customer.name", "agent.name"]
    assert placeholders(GREET)[0].default == "您"


def test_config_check_names_each_mistake() -> None:
    assert problems(GREET) == []
    assert problems(TRACKING, ticket_fields={"order_no"}) == []
    found = problems("{{customer.nmae}} {{ticket.fields.nope}} {{customer.fields.vip}}",
                     ticket_fields={"order_no"}, customer_fields={"member_level"})
    assert len(found) == 3
    assert "customer.nmae" in found[0] and "names no known variable" in found[0]
    assert "no ticket field 'nope'" in found[1]
    assert "no customer field 'vip'" in found[2]
    assert "malformed placeholder" in problems("hello {{ customer.name")[0]
    assert "malformed placeholder" in problems("{{customer.name | default: 您}}")[0]
    assert problems("{{input.x}}", unavailable=("input.",)) == ["{{input.x}} has no value here"]
    assert problems("{{satisfaction.url}}", unavailable=("satisfaction.url",))
    assert problems("{{input}}") and problems("{{input.a.b}}")
