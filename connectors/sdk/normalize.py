"""Pure functions from the SDK's requests to intake Messages, keys and checks; no I/O, no clock.

Text is kept exactly as sent (no trimming or normalisation, invisible and bidi characters
kept); NUL and lone surrogates are refused, as is text over the app's code-point limit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from typing import Any

import orjson

from intake import (
    Attachment,
    Event,
    Form,
    Identity,
    Message,
    Sender,
    Thread,
    clean_email,
    clean_phone,
    compiled_pattern,
    reference_for,
)

from .errors import Invalid
from .settings import SdkApp, TicketField
from .state import Owner, Session

CLIENT_MSG_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
REFERENCE_PREFIX = "SDK"
SUBJECT_CHARS = 80
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_text(text: Any, *, max_chars: int, name: str = "text", required: bool = True) -> str:
    """`text` as sent, or Invalid (`invalid_text`, `too_long`, `missing`)."""
    if text is None or text == "":
        if required:
            raise Invalid(f"{name} is required.", "missing", {name: "required"})
        return ""
    if not isinstance(text, str):
        raise Invalid(f"{name} must be a string.", "invalid_text", {name: "expected a string"})
    if "\x00" in text or _SURROGATE.search(text):
        raise Invalid(f"{name} holds NUL or a lone surrogate.", "invalid_text",
                      {name: "NUL and lone surrogates are not text"})
    if len(text) > max_chars:
        raise Invalid(f"{name} is over {max_chars} characters.", "too_long",
                      {name: f"at most {max_chars} characters"})
    return text


def check_client_msg_id(value: Any) -> str:
    if not isinstance(value, str) or not CLIENT_MSG_ID.match(value):
        raise Invalid("client_msg_id must be 1 to 64 of A-Z, a-z, 0-9, _ and -.",
                      "invalid_client_msg_id",
                      {"client_msg_id": "1 to 64 of [A-Za-z0-9_-]"})
    return value


def idempotency_key(owner: Owner, client_msg_id: str) -> str:
    """`sdk:<app>:user:<namespace>:<user id>:<client_msg_id>` or `sdk:<app>:device:…`."""
    return f"sdk:{owner.app}:{owner.key_part}:{client_msg_id}"


def satisfaction_key(owner: Owner, ticket_id: str, n: int) -> str:
    return f"sdk:{owner.app}:{owner.key_part}:satisfaction:{ticket_id}:{n}"


def reference(key: str) -> str:
    return reference_for(REFERENCE_PREFIX, key)


def digest(*parts: Any) -> str:
    """What a repeat must match to be the same request (a different one answers 409)."""
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def chat_subject(text: str) -> str:
    return text.split("\n", 1)[0][:SUBJECT_CHARS]


def clean_fields(app: SdkApp, values: Any) -> dict[str, Any]:
    """The ticket's fields checked against the app's `ticket_fields`; Invalid names each."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise Invalid("fields must be an object.", "invalid_fields", {"fields": "an object"})
    errors: dict[str, str] = {}
    cleaned: dict[str, Any] = {}
    for name in values:
        if app.field(name) is None:
            errors[str(name)] = "unknown field"
    for spec in app.ticket_fields:
        value = values.get(spec.name)
        if value is None or value == "":
            if spec.required:
                errors[spec.name] = "required"
            continue
        try:
            cleaned[spec.name] = clean_field(spec, value)
        except ValueError as exc:
            errors[spec.name] = str(exc)
    if errors:
        raise Invalid("Some fields are not valid.", "invalid_fields", errors)
    return cleaned


def clean_field(spec: TicketField, value: Any) -> Any:
    if spec.type == "number":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("expected a number")
        try:
            number = float(value)
        except ValueError as exc:
            raise ValueError("expected a number") from exc
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError("expected a number")
        _bounded(spec, number, float)
        return int(number) if number.is_integer() else number
    if not isinstance(value, str):
        raise ValueError("expected text")
    if spec.type == "date":
        try:
            day = dt.date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError("expected a date, YYYY-MM-DD") from exc
        _bounded(spec, day, dt.date.fromisoformat)
        return day.isoformat()
    if spec.type == "select":
        if value not in [o.value for o in spec.options or []]:
            raise ValueError("not one of the options")
        return value
    if "\x00" in value or _SURROGATE.search(value):
        raise ValueError("NUL and lone surrogates are not text")
    if spec.max_length is not None and len(value) > spec.max_length:
        raise ValueError(f"at most {spec.max_length} characters")
    if spec.type == "email":
        return clean_email(value)
    if spec.type == "phone":
        return clean_phone(value)
    if spec.pattern is not None and not compiled_pattern(spec.pattern).fullmatch(value):
        raise ValueError("not in the expected format")
    return value


def _bounded(spec: TicketField, value: Any, parse: Any) -> None:
    if spec.min is not None and value < parse(spec.min):
        raise ValueError(f"at least {spec.min}")
    if spec.max is not None and value > parse(spec.max):
        raise ValueError(f"at most {spec.max}")


def sender_of(session: Session) -> Sender:
    """Only what the app vouched for is an identity; typed contact data is not (see README)."""
    identities = [session.owner.identity, *session.identities]
    return Sender(name=session.display_name, identities=identities)


def channel_data(session: Session, extra: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {"user": {"id": session.owner.subject, "kind": session.owner.kind,
                                     "verified": session.verified}, **extra}
    if session.contact:
        data["contact"] = {**session.contact, "verified": False}
    return data


def ticket_message(session: Session, *, key: str, ticket_id: str, subject: str | None,
                   text: str, fields: dict[str, Any], attachments: list[Attachment],
                   message_id: uuid.UUID, received_at: dt.datetime, trace_id: str,
                   raw: str | None) -> Message:
    """A ticket from the app's form: `kind: form_submission`, its reference quotable."""
    return Message(
        id=message_id, idempotency_key=key, channel="sdk", account=session.app,
        kind="form_submission", sender=sender_of(session),
        thread=Thread(conversation_id=ticket_id, subject=subject),
        subject=subject, text=text, attachments=attachments,
        form=Form(form_id=f"{session.app}:ticket", fields=fields),
        channel_data=channel_data(session, {"reference": reference(key),
                                            "ticket_id": ticket_id}),
        received_at=received_at, trace_id=trace_id, raw=raw)


def chat_message(session: Session, *, key: str, ticket_id: str, subject: str | None, text: str,
                 attachments: list[Attachment], message_id: uuid.UUID,
                 received_at: dt.datetime, trace_id: str, raw: str | None,
                 reference_key: str | None = None) -> Message:
    """A chat message; the first of a new chat ticket carries the ticket's reference."""
    extra: dict[str, Any] = {"ticket_id": ticket_id}
    if reference_key is not None:
        extra["reference"] = reference(reference_key)
    return Message(
        id=message_id, idempotency_key=key, channel="sdk", account=session.app,
        kind="message", sender=sender_of(session),
        thread=Thread(conversation_id=ticket_id, subject=subject),
        subject=subject, text=text, attachments=attachments,
        channel_data=channel_data(session, extra),
        received_at=received_at, trace_id=trace_id, raw=raw)


def satisfaction_message(session: Session, *, key: str, ticket_id: str, score: int,
                         comment: str, message_id: uuid.UUID, received_at: dt.datetime,
                         trace_id: str) -> Message:
    return Message(
        id=message_id, idempotency_key=key, channel="sdk", account=session.app, kind="event",
        sender=sender_of(session), thread=Thread(conversation_id=ticket_id),
        text=comment, event=Event(type="satisfaction", data={"score": score, "comment": comment}),
        channel_data=channel_data(session, {"ticket_id": ticket_id}),
        received_at=received_at, trace_id=trace_id)


def verified_claims(claims: dict[str, Any]) -> list[Identity]:
    """Email and phone from a JWT, only where the issuer marked them verified."""
    found = []
    if claims.get("email_verified") is True and isinstance(claims.get("email"), str):
        try:
            found.append(Identity(kind="email", value=clean_email(claims["email"]),
                                  verified=True))
        except ValueError:
            pass
    if (claims.get("phone_number_verified") is True
            and isinstance(claims.get("phone_number"), str)):
        try:
            found.append(Identity(kind="phone", value=clean_phone(claims["phone_number"]),
                                  verified=True))
        except ValueError:
            pass
    return found
