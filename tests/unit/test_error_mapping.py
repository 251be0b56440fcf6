"""One meaning per kind of error at every edge: the HTTP answer and the SMTP reply."""

from __future__ import annotations

import json

from intake.errors import (
    BrokerUnavailable,
    Ignored,
    Rejected,
    SchemaInvalid,
    StorageUnavailable,
    Transient,
    Unsupported,
    smtp_reply,
)
from intake.http import error_answer


class FormUnknown(Rejected):
    reason = "form_not_found"
    status = 404


class TooFast(Rejected):
    reason = "rate_limited"
    status = 429

    def __init__(self) -> None:
        super().__init__("slow down")
        self.retry_after_s = 7


def body(response: object) -> dict[str, object]:
    text = response.text  # type: ignore[attr-defined]
    return dict(json.loads(text))


def test_rejected_is_answered_with_its_status_and_reason_and_fields() -> None:
    response = error_answer(FormUnknown("no form 'x'"))
    assert response.status == 404
    assert body(response) == {"error": "form_not_found", "message": "no form 'x'", "fields": {}}
    invalid = SchemaInvalid("bad")
    invalid.fields = {"email": "not an address"}  # type: ignore[attr-defined]
    response = error_answer(invalid)
    assert response.status == 422 and body(response)["fields"] == {"email": "not an address"}
    response = error_answer(TooFast())
    assert response.status == 429 and response.headers["Retry-After"] == "7"


def test_transient_is_503_with_retry_after() -> None:
    for error in (Transient("later"), BrokerUnavailable("down"), StorageUnavailable("db")):
        response = error_answer(error)
        assert response.status == 503 and response.headers["Retry-After"] == "5"
        assert body(response)["error"] == error.reason and body(response)["fields"] == {}


def test_ignored_and_unsupported_are_success() -> None:
    assert error_answer(Ignored("menu click")).status == 200
    response = error_answer(Unsupported("a new event type"))
    assert response.status == 202 and body(response)["reason"] == "unsupported_event"
    assert Unsupported.flag == "unsupported_type"


def test_an_ignored_event_is_counted_for_its_channel() -> None:
    from intake.metrics import IGNORED

    counted = IGNORED.labels("wechat", "wechat", "menu_click")
    before = counted._value.get()
    error_answer(Ignored("menu click", reason="menu_click"), channel="wechat")
    assert counted._value.get() == before + 1


def test_smtp_codes_follow_the_same_kinds() -> None:
    assert smtp_reply(None).code == 250
    assert smtp_reply(Ignored()).code == 250 and smtp_reply(Unsupported()).code == 250
    rejected = smtp_reply(FormUnknown())
    assert rejected.code == 550 and rejected.line() == "550 5.7.1 form_not_found"
    assert smtp_reply(BrokerUnavailable()).line().startswith("451 4.3.0")
