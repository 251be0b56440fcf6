"""Numbers and the call a set of events makes: pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.telephony.normalize import CallEvent, fold, parse_number, record_message

NUMBERS = [
    # (raw, region, E.164 or None, extension, withheld)
    ("013800138000", "CN", "+8613800138000", None, False),
    ("8613800138000", "CN", "+8613800138000", None, False),
    ("+8613800138000", "CN", "+8613800138000", None, False),
    ("0086 138-0013-8000", "CN", "+8613800138000", None, False),
    ("13800138000", "CN", "+8613800138000", None, False),
    ("138 0013 8000", "CN", "+8613800138000", None, False),
    ("1795113800138000", "CN", "+8613800138000", None, False),
    ("17951 13800138000", "CN", "+8613800138000", None, False),
    ("(010) 6552 9988", "CN", "+861065529988", None, False),
    ("010-65529988", "CN", "+861065529988", None, False),
    ("01065529988", "CN", "+861065529988", None, False),
    ("00442079460958", "CN", "+442079460958", None, False),
    ("+44 20 7946 0958", "CN", "+442079460958", None, False),
    ("+86 10 6552 9988 ext. 8001", "CN", "+861065529988", "8001", False),
    ("tel:+86-10-6552-9988;ext=8001", "CN", "+861065529988", "8001", False),
    ("010-65529988-8001", "CN", "+861065529988", "8001", False),
    ("010-65529988转8001", "CN", "+861065529988", "8001", False),
    ("sip:13800138000@pbx.example.cn", "CN", "+8613800138000", None, False),
    ("sip:+8613800138000@10.0.0.1;transport=udp", "CN", "+8613800138000", None, False),
    ("400-800-1234", "CN", "+864008001234", None, False),
    ("4008001234", "CN", "+864008001234", None, False),
    ("+14155550100", "US", "+14155550100", None, False),
    ("(415) 555-0100", "US", "+14155550100", None, False),
    ("415.555.0100", "US", "+14155550100", None, False),
    ("1-415-555-0100", "US", "+14155550100", None, False),
    ("+1 415 555 0100 x123", "US", "+14155550100", "123", False),
    ("020 7946 0958", "GB", "+442079460958", None, False),
    ("+49 30 901820", "CN", "+4930901820", None, False),
    ("0755-86013388", "CN", "+8675586013388", None, False),
    ("021 6212 3456", "CN", "+862162123456", None, False),
    ("anonymous", "CN", None, None, True),
    ("Anonymous", "US", None, None, True),
    ("restricted", "CN", None, None, True),
    ("private", "CN", None, None, True),
    ("unknown", "CN", None, None, True),
    ("unavailable", "CN", None, None, True),
    ("", "CN", None, None, True),
    ("<unknown>", "CN", None, None, True),
    ("sip:anonymous@anonymous.invalid", "CN", None, None, True),
    ("+266696687", "US", None, None, True),
    ("+7378742833", "US", None, None, True),
    ("+8656696", "US", None, None, True),
    ("+2562533", "US", None, None, True),
    ("+86282452253", "US", None, None, True),
    ("12", "CN", None, None, False),
    ("not a number", "CN", None, None, False),
]


@pytest.mark.parametrize(("raw", "region", "e164", "ext", "withheld"), NUMBERS)
def test_number_shapes_yield_e164_extension_or_withheld(
        raw: str, region: str, e164: str | None, ext: str | None, withheld: bool) -> None:
    number = parse_number(raw, region)
    assert (number.e164, number.ext, number.withheld) == (e164, ext, withheld)
    assert number.raw == raw.strip()


T0 = datetime(2026, 12, 5, 1, 30, tzinfo=UTC)


def event(kind: str, seconds: float, **fields: object) -> CallEvent:
    return CallEvent.model_validate({"line": "hotline", "call_id": "c1", "type": kind,
                                     "occurred_at": T0 + timedelta(seconds=seconds), **fields})


ANSWERED_CALL = [
    event("ringing", 0, from_raw="013800138000", to_raw="4008001234", agents=["1001", "1002"]),
    event("answered", 12, agent="1001"),
    event("transferred", 70, agent="1002"),
    event("recording", 200, recording_url="http://127.0.0.1:18090/r/c1.wav"),
    event("ended", 190, cause="normal_clearing"),
]


def test_a_transferred_call_keeps_one_record_with_each_leg() -> None:
    view = fold(ANSWERED_CALL, "CN")
    assert view.state == "completed"
    assert view.agent == "1002" and view.agents == ["1001", "1002"]
    assert [(leg.agent, leg.ended_at) for leg in view.legs] == [
        ("1001", T0 + timedelta(seconds=70)), ("1002", T0 + timedelta(seconds=190))]
    assert (view.wait_s, view.talk_s, view.duration_s) == (12.0, 178.0, 190.0)
    assert view.recording_url == "http://127.0.0.1:18090/r/c1.wav"


@settings(max_examples=200, deadline=None)
@given(st.permutations(ANSWERED_CALL), st.lists(st.integers(0, 4), max_size=6))
def test_any_order_with_duplicates_gives_the_same_record(
        events: list[CallEvent], repeats: list[int]) -> None:
    expected = fold(ANSWERED_CALL, "CN")
    assert fold([*events, *(events[i] for i in repeats)], "CN") == expected


def test_an_unanswered_inbound_call_from_a_callable_number_is_a_callback() -> None:
    view = fold([event("ringing", 0, from_raw="13800138000"), event("ended", 30)], "CN")
    assert view.state == "missed"
    message = record_message(view, language="en", join_latest_open=True, received_at=T0)
    assert "callback" in message.flags and message.thread is not None
    assert message.thread.join_latest_open is None  # a callback opens its own ticket
    assert message.idempotency_key == "telephony:hotline:c1:record"


def test_a_withheld_missed_call_has_no_identity_and_no_callback() -> None:
    view = fold([event("missed", 0, from_raw="anonymous")], "CN")
    message = record_message(view, language="zh", join_latest_open=False, received_at=T0)
    assert message.sender.identities == []
    assert message.flags == ["withheld_number"]


def test_an_outbound_call_nobody_answered_takes_its_cause() -> None:
    view = fold([event("ringing", 0, direction="outbound", agent="1001", to_raw="13800138000"),
                 event("ended", 20, cause="busy")], "CN")
    assert (view.state, view.agent, view.customer.e164) == ("busy", "1001", "+8613800138000")


def test_a_timeout_ends_the_call_when_inferred() -> None:
    view = fold([event("ringing", 0)], "CN", inferred_end=T0 + timedelta(seconds=600))
    assert (view.state, view.end_inferred, view.end_reason) == ("missed", True, "timeout")
