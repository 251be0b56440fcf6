"""Cleaning and validation of typed fields any channel receives: text, email, phone."""

from __future__ import annotations

import re
from typing import Any

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

__all__ = ["clean_email", "clean_phone", "clean_text", "plain_email"]

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_EMAIL = re.compile(
    rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?P<domain>(?:{_LABEL}\.)+[A-Za-z]{{2,63}})")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LINE_BREAKS = re.compile(r"[\r\n\t]+")


def clean_text(value: Any, *, max_chars: int, multiline: bool = False) -> str:
    """Text without control characters, line breaks unified (or folded to spaces), trimmed.

    Raises ValueError, with a message for the person who typed it, for a non-scalar value or
    one over `max_chars` characters.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    if not isinstance(value, str | int | float):
        raise ValueError("expected text")
    text = _CONTROL.sub("", str(value).replace("\r\n", "\n").replace("\r", "\n")).strip()
    if not multiline:
        text = _LINE_BREAKS.sub(" ", text)
    if len(text) > max_chars:
        raise ValueError(f"Use at most {max_chars} characters (this has {len(text)}).")
    return text


def clean_email(text: str) -> str:
    """The address as email_validator normalizes it, or ValueError with its explanation."""
    plain = plain_email(text)
    if plain is not None:
        return plain
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"Enter a valid email address ({exc}).") from exc


def plain_email(text: str) -> str | None:
    """A plain ASCII address email_validator would accept, normalized as it would; else None.

    Nearly every address is plain (dot-atom local part, letters-digits-hyphens domain with a
    letters-only top-level domain), and email_validator's full check cost ~8% of a submission's
    CPU. Anything else (quoted, internationalized, xn-- labels, special-use domains, overlong,
    or invalid) returns None and gets the library's verdict and message. A property test
    checks that this never disagrees with the library.
    """
    match = _PLAIN_EMAIL.fullmatch(text) if len(text) <= 254 else None
    if match is None:
        return None
    local, domain = match.group("local"), match.group("domain").lower()
    if len(local) > 64 or len(domain) > 253 or "--" in domain:
        return None
    if any(domain.endswith("." + special) for special in SPECIAL_USE_DOMAIN_NAMES):
        return None
    return f"{local}@{domain}"


def clean_phone(text: str, region: str | None = None) -> str:
    """The number in E.164 (`+442079460000`), or ValueError; `region` for national numbers."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        hint = "" if region else " with its country code, e.g. +44 20 7946 0000"
        raise ValueError(f"Enter a valid phone number{hint}.") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError("Enter a valid phone number.")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
