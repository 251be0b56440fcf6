"""The edge helpers every connector imports from `intake`: limits, addresses, fields, names."""

from __future__ import annotations

import pytest

from intake import (
    RateLimiter,
    clean_email,
    clean_original_filename,
    clean_phone,
    clean_text,
    client_address,
    reference_for,
    reference_pattern,
    sanitize_filename,
)


def test_the_rate_limiter_allows_a_burst_then_names_the_wait() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, max_entries=10, clock=lambda: now[0])
    assert limiter.take("a") == 0 and limiter.take("a") == 0
    assert limiter.take("a") == pytest.approx(1.0)
    assert limiter.take("b") == 0  # one address does not spend another's tokens
    now[0] = 1.0
    assert limiter.take("a") == 0


def test_the_rate_limiter_table_forgets_the_least_recent_address() -> None:
    limiter = RateLimiter(per_minute=1, burst=1, max_entries=2, clock=lambda: 0.0)
    for address in ("a", "b", "c"):
        limiter.take(address)
    assert list(limiter.buckets) == ["b", "c"]


def test_forwarded_for_is_ignored_unless_trusted_and_then_only_its_last_hop() -> None:
    headers = {"X-Forwarded-For": "6.6.6.6, 10.0.0.7"}
    assert client_address("127.0.0.1", headers, trust_forwarded_for=False) == "127.0.0.1"
    assert client_address("127.0.0.1", headers, trust_forwarded_for=True) == "10.0.0.7"
    assert client_address(None, {}, trust_forwarded_for=True) == "unknown"


def test_text_is_cleaned_and_limited() -> None:
    assert clean_text(" a\r\nb\x07 ", max_chars=10) == "a b"
    assert clean_text("a\r\nb", max_chars=10, multiline=True) == "a\nb"
    with pytest.raises(ValueError, match="at most 3"):
        clean_text("abcd", max_chars=3)
    with pytest.raises(ValueError, match="expected text"):
        clean_text({"no": 1}, max_chars=3)


def test_email_and_phone_are_normalised_or_refused_with_a_reason() -> None:
    assert clean_email("Ann@Example.COM") == "Ann@example.com"
    with pytest.raises(ValueError, match="valid email"):
        clean_email("not an address")
    assert clean_phone("020 7946 0000", "GB") == "+442079460000"
    with pytest.raises(ValueError, match="country code"):
        clean_phone("020 7946 0000")


def test_file_names_lose_paths_controls_and_bidi_tricks() -> None:
    assert sanitize_filename("../../etc/passwd") == "passwd"
    assert sanitize_filename("invoice\u202efdp.exe") == "invoicefdp.exe"
    assert sanitize_filename("...") == "attachment"
    assert len(sanitize_filename("é" * 300 + ".pdf").encode()) <= 200
    assert sanitize_filename("é" * 300 + ".pdf").endswith(".pdf")
    assert clean_original_filename("a\x00b\x01.txt") == "ab\ufffd.txt"


def test_references_are_stable_per_key_and_carry_their_prefix() -> None:
    web = reference_for("WF", "webform:contact:1")
    assert web == reference_for("WF", "webform:contact:1")
    assert reference_pattern("WF").match(web)
    sdk = reference_for("SDK", "sdk:app:user:1")
    assert reference_pattern("SDK").match(sdk) and not reference_pattern("WF").match(sdk)
    with pytest.raises(ValueError):
        reference_for("wf", "x")
