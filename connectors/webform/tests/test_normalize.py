"""Captured submissions against their expected messages, and the pure helpers behind them."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.webform.errors import SubmissionInvalid
from connectors.webform.normalize import (
    REFERENCE,
    _plain_email,
    clean_email,
    clean_fields,
    reference_for,
    render_text,
    sanitize_filename,
    to_message,
)
from connectors.webform.settings import FormDefinition
from intake.message import Message

from .conftest import RecordingPublisher, load_accounts

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
# `INTAKE_GOLDEN=1 pytest connectors/webform` rewrites the expected files; review the diff.
GOLDEN = os.environ.get("INTAKE_GOLDEN") == "1"
FIXED_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
FIXED_TRACE = "0" * 31 + "1"
FIXED_CLOCK = datetime(2024, 5, 18, 9, 30, tzinfo=UTC)


def fixture_stems() -> list[str]:
    return sorted(p.name for p in FIXTURES.iterdir()
                  if not p.name.startswith(".") and not p.name.endswith((".headers.json",
                                                                          ".expected.json")))


def pinned(message: Message) -> dict[str, Any]:
    """The message as the bus carries it, with the id, trace id and clock fixed."""
    message = message.model_copy(update={"id": FIXED_ID, "trace_id": FIXED_TRACE,
                                         "received_at": FIXED_CLOCK})
    return json.loads(message.model_dump_json())


@pytest.mark.parametrize("name", fixture_stems())
async def test_fixture_matches_its_expected_message(name: str, client: TestClient,
                                                    publisher: RecordingPublisher) -> None:
    body = (FIXTURES / name).read_bytes()
    stem = name.rsplit(".", 1)[0]
    headers = json.loads((FIXTURES / f"{stem}.headers.json").read_text(encoding="utf-8"))
    response = await client.post("/forms/contact/submissions", data=body, headers=headers,
                                 allow_redirects=False)
    assert response.status in (201, 303), await response.text()
    [message] = publisher.messages
    got = pinned(message)
    expected_path = FIXTURES / f"{stem}.expected.json"
    if GOLDEN:
        expected_path.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n",
                                 encoding="utf-8")
    assert got == json.loads(expected_path.read_text(encoding="utf-8"))
    Message.model_validate(got)


def test_every_fixture_has_its_expected_and_headers_files() -> None:
    for name in fixture_stems():
        stem = name.rsplit(".", 1)[0]
        assert (FIXTURES / f"{stem}.expected.json").exists(), stem
        assert (FIXTURES / f"{stem}.headers.json").exists(), stem


def test_reference_is_short_unambiguous_and_stable() -> None:
    reference = reference_for("webform:contact:abc")
    assert reference == reference_for("webform:contact:abc")
    assert reference != reference_for("webform:contact:abd")
    assert REFERENCE.match(reference) and len(reference) == 11
    assert not set(reference[3:]) & set("ILOU")


@pytest.mark.parametrize(("sent", "kept"), [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\photo.JPG", "photo.JPG"),
    ("..", "attachment"),
    (".hidden", "hidden"),
    ("a\x00b\x1fc.txt", "a_b_c.txt"),
    ('what?"*<>|.txt', "what______.txt"),
    ("", "attachment"),
    ("照片" * 60 + ".jpeg", "照片" * 32 + "照.jpeg"),
])
def test_filenames_are_sanitised(sent: str, kept: str) -> None:
    assert sanitize_filename(sent) == kept
    assert len(sanitize_filename(sent).encode()) <= 200


def contact() -> FormDefinition:
    form = load_accounts().form("contact")
    assert form is not None
    return form


def test_clean_fields_normalises_email_and_phone() -> None:
    clean = clean_fields(contact(), {"name": ["  Ann  "], "email": ["Ann@EXAMPLE.com"],
                                     "phone": ["(010) 6552 9988"], "topic": ["enquiry"],
                                     "subject": ["Hi\nthere"], "message": ["a\r\nb\x00"],
                                     "consent": ["on"]})
    assert clean["name"] == "Ann"
    assert clean["email"] == "Ann@example.com"
    assert clean["phone"] == "+861065529988"
    assert clean["subject"] == "Hi there"  # one line
    assert clean["message"] == "a\nb"
    assert clean["consent"] is True and clean["attachment"] == []


def test_clean_fields_reports_every_bad_field_at_once() -> None:
    with pytest.raises(SubmissionInvalid) as caught:
        clean_fields(contact(), {"name": ["a", "b"], "email": ["x@"], "topic": [""]})
    assert set(caught.value.fields) == {"name", "email", "topic", "message", "consent"}
    assert caught.value.fields["name"] == "Send one value only."


def test_to_message_builds_subject_from_title_when_there_is_no_subject() -> None:
    form = contact()
    fields = {"name": None, "email": None, "phone": "+8613800138000", "topic": "suggestion",
              "subject": None, "message": "A long first line " * 10 + "\nsecond",
              "attachment": [], "consent": True}
    message = to_message(form, fields, message_id=FIXED_ID, idempotency_key="webform:contact:k",
                         reference="WF-00000000", received_at=FIXED_CLOCK, trace_id=FIXED_TRACE)
    assert message.subject is not None and len(message.subject) == 120
    assert message.subject.startswith("联系我们 · Contact us: A long first line")
    assert message.subject.endswith("…")
    assert message.sender.name is None
    assert [i.kind for i in message.sender.identities] == ["phone"]
    assert message.channel_data == {"reference": "WF-00000000"}
    text = render_text(form, fields)
    assert text.endswith("类别 Topic: 建议 Suggestion\n我同意为处理本次请求而保存我的联系方式。"
                         "I agree that my contact details are stored to handle this request: yes")


_EMAIL_PIECES = st.sampled_from([
    "a", "Z", "0", "9", ".", "..", "-", "--", "_", "+", "'", "!", "#", "~", "é", "中", "\"",
    " ", "@", "xn--", "bench", "Example", "COM", "org", "test", "local", "localhost",
    "invalid", "x" * 63, "y" * 64, "1", "123"])


@settings(max_examples=3000, deadline=None)
@given(local=st.lists(_EMAIL_PIECES, min_size=0, max_size=6),
       domain=st.lists(_EMAIL_PIECES, min_size=0, max_size=8),
       tld=st.sampled_from(["com", "COM", "org", "c1", "c", "test", "local", "中国", "de", ""]))
def test_the_plain_email_shortcut_never_disagrees_with_email_validator(
        local: list[str], domain: list[str], tld: str) -> None:
    text = "".join(local) + "@" + "".join(domain) + ("." + tld if tld else "")
    try:
        expected: str | None = validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError:
        expected = None
    shortcut = _plain_email(text)
    assert shortcut is None or shortcut == expected, text
    if expected is None:
        with pytest.raises(ValueError, match="valid email address"):
            clean_email(text)
    else:
        assert clean_email(text) == expected


@pytest.mark.parametrize("text", [
    "bench1@example.com", "Bench.Name+tag@Sub.Example.COM", "o'brien@example.ie",
    "a-b_c@ex-ample.co.uk", "x" * 64 + "@example.com"])
def test_everyday_addresses_take_the_shortcut(text: str) -> None:
    assert _plain_email(text) == validate_email(text, check_deliverability=False).normalized
