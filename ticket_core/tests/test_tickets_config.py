"""The `tickets` section and the agent workflow's routing keys: what loads, and each mistake
with its line, through the ticket core's loader and `intake config check`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from intake.config import load_document
from intake.errors import ConfigInvalid
from intake.settings import REPO_ROOT, IntakeSettings
from router.rules import load_rules
from ticket_core.tickets_config import TicketsConfig, load_tickets

EXAMPLE = REPO_ROOT / "deploy" / "intake.example.yaml"
ROUTING = """\
desks:
  - {id: aftersales, name: 售后, default_skill_group: sg_a, sla_policy: standard,
     reply_from: {email: Support@Shop.Example}}
skill_groups:
  - {id: sg_a, desk: aftersales}
categories:
  - {id: complaint, name: 投诉, sla_policy: standard}
sla_policies:
  - id: standard
    first_response: 2h
    pause_on: [pending, on_hold]
    targets:
      urgent: {first_response: 30m, next_response: 1h, resolution: 4h}
default_route: {desk: aftersales}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "intake.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def check(tmp_path: Path, text: str) -> list[str]:
    from intake.cli import check_config

    return check_config(IntakeSettings(config=write(tmp_path, text)))


def test_the_example_loads_every_key_of_the_section() -> None:
    doc = load_document(EXAMPLE)
    config = load_tickets(doc)
    assert [f.key for f in config.ticket_fields] == [
        "order_no", "product_line", "refund_amount", "visit_date", "resolution_code"]
    resolution = config.ticket_fields[-1]
    assert (resolution.required, resolution.desks) == ("on_resolve", ["aftersales"])
    assert [f.key for f in config.customer_fields or []] == ["member_level", "backup_phone"]
    assert [q.id for q in config.quick_replies] == ["greet", "tracking"]
    assert config.satisfaction.on_resolve and not config.satisfaction.on_auto_resolve
    assert config.satisfaction.expires_after == timedelta(days=7)
    assert config.default_phone_region == "CN"
    assert (config.pending_auto_resolve_after, config.resolved_auto_close_after) == (
        timedelta(days=7), timedelta(days=3))
    assert config.public_base_url == "http://127.0.0.1:8000"
    assert config.load_statuses == ["new", "open"]
    assert "aftersales" in config.desk_ids and "complaint" in config.category_ids
    rules = load_rules(doc, EXAMPLE.read_bytes()).config
    desks = {d.id: d for d in rules.desks}
    assert desks["aftersales"].sla_policy == "standard"
    assert desks["presales"].reply_from is not None
    assert desks["presales"].reply_from.email == "support@shop.example"
    assert desks["complaints"].sla_policy == "complaint"
    assert {c.id: c.sla_policy for c in rules.categories}["complaint"] == "complaint"
    standard = next(p for p in rules.sla_policies if p.id == "standard")
    assert standard.pause_on == ["pending"]
    assert standard.targets_for("urgent").first_response == timedelta(minutes=30)
    assert standard.targets_for("low").resolution == timedelta(hours=30)
    groups = {g.id: g for g in rules.skill_groups}
    assert groups["sg_aftersales_l1"].strategy == "least_loaded"
    assert groups["sg_hotline_supervisors"].strategy == "claim"
    assert groups["sg_hotline"].capacity == {"webform": 10, "email": 10, "api": 10,
                                             "wechat": 5, "sdk": 3, "telephony": 1}


def test_the_example_passes_config_check() -> None:
    from intake.cli import check_config

    assert check_config(IntakeSettings(config=EXAMPLE)) == []


def test_no_section_means_defaults_and_free_form_customer_fields(tmp_path: Path) -> None:
    config = load_tickets(load_document(write(tmp_path, ROUTING)))
    assert config.model_dump() == TicketsConfig().model_dump()
    assert (config.desk_ids, config.category_ids) == ({"aftersales"}, {"complaint"})
    assert config.customer_field_set.free_form and not config.ticket_field_set.free_form
    assert config.load_statuses == ["new", "open"]


def test_routing_keys_load_and_per_priority_targets_fall_back_to_flat(tmp_path: Path) -> None:
    doc = load_document(write(tmp_path, ROUTING))
    rules = load_rules(doc, ROUTING)
    policy = rules.config.sla_policies[0]
    assert policy.targets_for("urgent").first_response == timedelta(minutes=30)
    assert policy.targets_for("normal").first_response == timedelta(hours=2)
    assert rules.config.desks[0].reply_from is not None
    assert rules.config.desks[0].reply_from.email == "Support@shop.example"


@pytest.mark.parametrize(("text", "line", "expected"), [
    ("tickets:\n  ticket_fields:\n    - {key: level, label: L, type: select}\n", 3,
     "tickets.ticket_fields.0: Value error, a select field needs options"),
    ("tickets:\n  ticket_fields:\n    - {key: n, label: N, type: text,\n"
     "       pattern: '(a)\\1'}\n", 4, "backreferences are not supported"),
    ("tickets:\n  ticket_fields:\n    - {key: n, label: N, type: text, colour: red}\n", 3,
     "tickets.ticket_fields.0.colour: Extra inputs are not permitted"),
    ("tickets:\n  unknown_key: 1\n", 2, "tickets.unknown_key: Extra inputs"),
    ("tickets:\n  desk_ids: [a]\n", 2, "tickets.desk_ids: Extra inputs"),
    ("tickets:\n  ticket_fields:\n    - {key: n, label: N, type: colour}\n", 3,
     "tickets.ticket_fields.0.type: Input should be"),
    ("tickets:\n  ticket_fields:\n    - {key: n, label: N, type: checkbox, options: [a]}\n", 3,
     "options belong to select and multiselect fields"),
    ("tickets:\n  ticket_fields:\n    - {key: n, label: N, type: number, min: 5, max: 1}\n",
     3, "min is greater than max"),
    ("tickets:\n  ticket_fields:\n    - {key: n, label: N, type: text}\n"
     "    - {key: n, label: M, type: text}\n", 4, "'n' is listed twice"),
    ("tickets:\n  ticket_fields:\n    - key: n\n      label: N\n      type: text\n"
     "      desks: [aftersales, nowhere]\n", 6,
     "tickets.ticket_fields.0.desks.1: unknown desk 'nowhere'"),
    ("tickets:\n  quick_replies:\n    - id: q\n      title: Q\n"
     "      text: '您好 {{customer.nmae}}'\n", 5,
     "tickets.quick_replies.0.text: {{customer.nmae}} names no known variable"),
    ("tickets:\n  quick_replies:\n    - id: q\n      title: Q\n"
     "      text: '{{ticket.fields.nothing}}'\n", 5, "no ticket field 'nothing'"),
    ("tickets:\n  satisfaction: {on_resolve: true, text: 请评分}\n", 2,
     "the text must hold {{satisfaction.url}}"),
    ("tickets:\n  default_phone_region: XX\n", 2, "not a region phonenumbers knows"),
    ("tickets:\n  load_statuses: [resolved]\n", 2, "tickets.load_statuses.0: Input should be"),
    ("tickets:\n  pending_auto_resolve_after: soon\n", 2, "pending_auto_resolve_after"),
])
def test_mistakes_in_the_section_name_their_line(tmp_path: Path, text: str, line: int,
                                                 expected: str) -> None:
    path = write(tmp_path, ROUTING + text)
    base = ROUTING.count("\n")
    with pytest.raises(ConfigInvalid) as caught:
        load_tickets(load_document(path))
    assert any(p.startswith(f"{path}:{base + line}: ") and expected in p
               for p in caught.value.problems), caught.value.problems
    assert any(expected in p for p in check(tmp_path, ROUTING + text))


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("sla_policy: standard,\n", "sla_policy: nothing,\n",
     "desks.0.sla_policy: unknown SLA policy 'nothing'"),
    ("{id: complaint, name: 投诉, sla_policy: standard}",
     "{id: complaint, name: 投诉, sla_policy: nothing}",
     "categories.0.sla_policy: unknown SLA policy 'nothing'"),
    ("pause_on: [pending, on_hold]", "pause_on: [closed]", "sla_policies.0.pause_on.0"),
    ("urgent: {first_response", "urgent: {colour: red, first_response",
     "sla_policies.0.targets.urgent.colour: Extra inputs"),
    ("targets:\n      urgent", "targets:\n      soon", "sla_policies.0.targets.soon"),
    ("reply_from: {email: Support@Shop.Example}", "reply_from: {email: nobody}",
     "desks.0.reply_from.email"),
    ("default_skill_group: sg_a", "default_skill_group: sg_nowhere",
     "unknown skill group 'sg_nowhere'"),
])
def test_mistakes_in_the_routing_keys_name_their_line(tmp_path: Path, old: str, new: str,
                                                      expected: str) -> None:
    assert old in ROUTING
    text = ROUTING.replace(old, new)
    line = next(i for i, row in enumerate(text.splitlines(), 1)
                if new.splitlines()[-1].strip()[:20] in row)
    problems = check(tmp_path, text)
    assert any(expected in p and f":{line}: " in p for p in problems) or any(
        expected in p and f":{line - 1}: " in p for p in problems), (line, problems)


def test_an_unknown_skill_group_in_an_escalation_step_names_its_line(tmp_path: Path) -> None:
    text = ROUTING + ("escalations:\n  - id: warned\n    steps:\n"
                      "      - {id: s1, within: 30m,\n"
                      "         target: {desk: aftersales, skill_group: sg_ghost}}\n")
    problems = check(tmp_path, text)
    line = ROUTING.count("\n") + 5
    assert any(f":{line}: escalations.0.steps.0.target.skill_group: unknown skill group "
               "'sg_ghost'" in p for p in problems), problems


def test_a_decision_takes_its_prioritys_targets_in_business_time() -> None:
    from datetime import UTC, datetime

    rules = load_rules(load_document(EXAMPLE), EXAMPLE.read_bytes())
    assert rules.planner is not None
    monday_10am = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
    urgent = rules.planner.sla("standard", "aftersales", monday_10am, "urgent")
    assert urgent.first_response_due == datetime(2026, 3, 2, 2, 30, tzinfo=UTC)
    # 10:00-12:00, the lunch break, then 13:30-15:30.
    assert urgent.resolution_due == datetime(2026, 3, 2, 7, 30, tzinfo=UTC)
    normal = rules.planner.sla("standard", "aftersales", monday_10am, "normal")
    assert normal.first_response_due == datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
