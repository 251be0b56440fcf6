"""Form definitions: what the config accepts, and how a mistake is reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.webform import CHANNEL
from connectors.webform.settings import FormDefinition, WebformSettings
from intake.config import load_document
from intake.errors import ConfigInvalid

from .conftest import EXAMPLE

BASE: dict[str, Any] = {"id": "f", "title": "F", "fields": [{"name": "message", "label": "M"}]}


def form(**changes: Any) -> FormDefinition:
    return FormDefinition.model_validate({**BASE, **changes})


def test_the_example_contact_form_loads_with_its_roles() -> None:
    [contact] = CHANNEL.load_accounts(load_document(EXAMPLE)).forms  # type: ignore[attr-defined]
    assert contact.id == "contact"
    assert contact.default_region == "CN"
    topic = contact.field("topic")
    assert topic is not None and [o.label for o in topic.options or []] == [
        "咨询 Enquiry", "售后 After-sales", "投诉 Complaint", "建议 Suggestion"]
    roles = (contact.name_field, contact.email_field, contact.phone_field,
             contact.subject_role_field, contact.text_role_field)
    assert [f.name if f else None for f in roles] == ["name", "email", "phone", "subject",
                                                      "message"]


def test_options_may_be_plain_strings() -> None:
    f = form(fields=[{"name": "size", "type": "select", "label": "Size",
                      "options": ["S", {"value": "m", "label": "M"}]}])
    assert [(o.value, o.label) for o in f.fields[0].options or []] == [("S", "S"), ("m", "M")]


@pytest.mark.parametrize(("changes", "expected"), [
    ({"theme_color": "blue"}, "#rrggbb"),
    ({"id": "Has Space"}, "String should match pattern"),
    ({"default_region": "XX"}, "region code"),
    ({"fields": [{"name": "t", "type": "select", "label": "T"}]}, "a select needs options"),
    ({"fields": [{"name": "t", "label": "T", "options": ["a"]}]}, "only a select takes"),
    ({"fields": [{"name": "t", "label": "T", "multiple": True}]}, "apply to file fields"),
    ({"fields": [{"name": "t", "label": "T", "pattern": "("}]}, "not a pattern RE2 can run"),
    ({"fields": [{"name": "t", "label": "T", "pattern": "(a)\\1"}]}, "backreferences"),
    ({"fields": [{"name": "t", "label": "T", "pattern": "(?!x)[a-z]+"}]}, "lookahead"),
    ({"fields": [{"name": "1x", "label": "T"}]}, "String should match pattern"),
    ({"fields": [{"name": "a", "label": "A"}, {"name": "a", "label": "B"}]}, "used twice"),
    ({"fields": [{"name": "website", "label": "W"}]}, "reserved for the honeypot"),
    ({"fields": [{"name": "a", "type": "colour", "label": "A"}]}, "Input should be"),
    ({"subject_field": "nope"}, "no field 'nope'"),
    ({"fields": [{"name": "a", "label": "A", "accept": "pdf"}]}, "neither a MIME type"),
])
def test_mistakes_in_a_form_are_refused(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        form(**changes)


def test_a_duplicate_form_id_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "intake.yaml"
    path.write_text("channels:\n  webform:\n    forms:\n"
                    "      - {id: a, title: A, fields: [{name: m, label: M}]}\n"
                    "      - {id: a, title: B, fields: [{name: m, label: M}]}\n",
                    encoding="utf-8")
    with pytest.raises(ConfigInvalid) as caught:
        CHANNEL.load_accounts(load_document(path))
    problems = caught.value.problems
    assert problems == [f"{path}:3: channels.webform.forms: "
                        "Value error, form id 'a' is used twice (again at item 1)"]


def test_a_bad_colour_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "intake.yaml"
    path.write_text("channels:\n  webform:\n    forms:\n"
                    "      - id: b\n        title: B\n        theme_color: red\n"
                    "        fields: [{name: m, label: M}]\n", encoding="utf-8")
    with pytest.raises(ConfigInvalid) as caught:
        CHANNEL.load_accounts(load_document(path))
    assert caught.value.problems == [
        f"{path}:6: channels.webform.forms.0.theme_color: "
        "Value error, must be a colour written #rrggbb"]


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTAKE_WEBFORM_PORT", "9001")
    monkeypatch.setenv("INTAKE_WEBFORM_PUBLIC_URL", "https://forms.example.com/")
    settings = WebformSettings()
    assert settings.port == 9001
    assert settings.public_url == "https://forms.example.com"
    assert settings.max_body_bytes == 10 * 1024 * 1024
    assert settings.rate_limit_per_minute == 30
    assert settings.trust_forwarded_for is False
