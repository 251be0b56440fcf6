"""Pure functions from a parsed submission to clean field values and an intake Message."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from intake import (
    Attachment,
    Form,
    Identity,
    Message,
    Sender,
    clean_email,
    clean_original_filename,
    clean_phone,
    clean_text,
    plain_email,
    reference_pattern,
    sanitize_filename,
)
from intake import reference_for as kernel_reference_for

from .errors import SubmissionInvalid
from .settings import FormDefinition, FormField

__all__ = ["REFERENCE", "Upload", "clean_email", "clean_fields", "clean_original_filename",
           "content_digest", "idempotency_key", "reference_for", "render_text",
           "sanitize_filename", "to_message"]

CHANNEL = "webform"
REFERENCE_PREFIX = "WF"
SUBJECT_CHARS = 120
REFERENCE = reference_pattern(REFERENCE_PREFIX)
_plain_email = plain_email  # the property test compares it with email_validator
_TRUE = {"on", "true", "1", "yes", "y"}
_FALSE = {"", "off", "false", "0", "no", "n"}


@dataclass(frozen=True)
class Upload:
    """A file as the client sent it, before it goes to the blob store."""

    field: str
    original_filename: str
    content_type: str
    data: bytes

    @property
    def filename(self) -> str:
        return sanitize_filename(self.original_filename)


def reference_for(idempotency_key: str) -> str:
    """`WF-` and 8 Crockford base32 characters of the key's sha256: a retry shows the same one."""
    return kernel_reference_for(REFERENCE_PREFIX, idempotency_key)


def idempotency_key(form_id: str, key: str) -> str:
    return f"{CHANNEL}:{form_id}:{key}"


def content_digest(values: Mapping[str, Any], uploads: Iterable[Upload]) -> str:
    """A digest of a submission's content, to tell a resubmitted page from an edited one."""
    parts = [f"{name}={values[name]!r}" for name in sorted(values)]
    parts += sorted(f"{u.field}:{hashlib.sha256(u.data).hexdigest()}" for u in uploads)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _text(value: Any, field: FormField, max_chars: int) -> str:
    return clean_text(value, max_chars=min(field.max_length or max_chars, max_chars),
                      multiline=field.type == "textarea")


def _checkbox(value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("Tick the box or leave it empty.")


def _accepts(field: FormField, upload: Upload) -> bool:
    if not field.accept:
        return True
    content_type = upload.content_type.lower()
    filename = upload.filename.lower()
    for entry in field.accept:
        if entry.startswith(".") and filename.endswith(entry):
            return True
        if entry.endswith("/*") and content_type.startswith(entry[:-1]):
            return True
        if entry == content_type:
            return True
    return False


def _clean_one(form: FormDefinition, field: FormField, raw: list[Any],
               uploads: list[Upload], max_chars: int, max_files: int) -> Any:
    if field.type == "file":
        if raw and any(v not in (None, "") for v in raw):
            raise ValueError("Send files as multipart/form-data uploads.")
        if field.required and not uploads:
            raise ValueError("Choose a file.")
        if len(uploads) > 1 and not field.multiple:
            raise ValueError("Choose only one file.")
        if len(uploads) > max_files:
            raise ValueError(f"Choose at most {max_files} files.")
        for upload in uploads:
            if not _accepts(field, upload):
                raise ValueError(f"{upload.filename}: this type of file is not accepted "
                                 f"(accepted: {', '.join(field.accept or [])}).")
        return uploads
    if len(raw) > 1:
        raise ValueError("Send one value only.")
    value = raw[0] if raw else None
    if field.type == "checkbox":
        checked = _checkbox(value)
        if field.required and not checked:
            raise ValueError("Tick this box to continue.")
        return checked
    text = _text(value, field, max_chars)
    if not text:
        if field.required:
            raise ValueError("Choose an option." if field.type == "select"
                             else "This field is required.")
        return None
    if field.type == "email":
        return clean_email(text)
    if field.type == "phone":
        return clean_phone(text, form.default_region)
    if field.type == "select":
        if text not in {option.value for option in field.options or []}:
            raise ValueError("Choose one of the listed options.")
        return text
    if not field.pattern_holds(text):
        raise ValueError("This is not in the expected format.")
    return text


def clean_fields(form: FormDefinition, values: Mapping[str, list[Any]],
                 uploads: Sequence[Upload] = (), *, max_field_chars: int = 10_000,
                 max_files: int = 5) -> dict[str, Any]:
    """Validate a submission against its form; raise SubmissionInvalid with one message a field.

    `values` maps each submitted name to its values (urlencoded and multipart may repeat a
    name); the result maps every field of the form to its clean value: text or None, a bool for
    a checkbox, E.164 for a phone, the normalised address for an email, a list of Uploads for
    a file field.
    """
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    known = {field.name for field in form.fields}
    for name in values:
        if name not in known:
            errors[name] = "This form has no such field."
    for upload in uploads:
        if upload.field not in known:
            errors[upload.field] = "This form has no such field."
    if len(uploads) > max_files:
        errors[uploads[max_files].field] = f"Send at most {max_files} files in all."
    for field in form.fields:
        mine = [u for u in uploads if u.field == field.name]
        try:
            clean[field.name] = _clean_one(form, field, list(values.get(field.name, [])), mine,
                                           max_field_chars, max_files)
        except ValueError as exc:
            errors[field.name] = str(exc)
    if errors:
        raise SubmissionInvalid(errors)
    return clean


def _display(field: FormField, value: Any) -> str | None:
    if value is None or value == "" or value == []:
        return None
    if field.type == "checkbox":
        return "yes" if value else "no"
    if field.type == "select":
        return next((o.label for o in field.options or [] if o.value == value), str(value))
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


def _identities(form: FormDefinition, fields: Mapping[str, Any]) -> list[Identity]:
    identities = []
    email_field, phone_field = form.email_field, form.phone_field
    if email_field and fields.get(email_field.name):
        # Lower-cased whole: local parts are case-sensitive in theory only, and one customer
        # must not become two because they typed a capital once. form.fields keeps the case.
        identities.append(Identity(kind="email", value=str(fields[email_field.name]).lower()))
    if phone_field and fields.get(phone_field.name):
        identities.append(Identity(kind="phone", value=str(fields[phone_field.name])))
    return identities


def _subject(form: FormDefinition, fields: Mapping[str, Any], main: str) -> str:
    subject_field = form.subject_role_field
    if subject_field is not None:
        subject = _display(subject_field, fields.get(subject_field.name))
        if subject:
            return subject
    first_line = next((line.strip() for line in main.splitlines() if line.strip()), "")
    if not first_line:
        return form.title
    subject = f"{form.title}: {first_line}"
    return subject if len(subject) <= SUBJECT_CHARS else subject[:SUBJECT_CHARS - 1] + "…"


def render_text(form: FormDefinition, fields: Mapping[str, Any]) -> str:
    """The message field, then every other answered field as a `Label: value` line."""
    text_field = form.text_role_field
    main = str(fields.get(text_field.name) or "") if text_field else ""
    roles = {f.name for f in (form.name_field, form.email_field, form.phone_field,
                              form.subject_role_field, text_field) if f is not None}
    lines = []
    for field in form.fields:
        if field.name in roles or field.type == "file":
            continue
        shown = _display(field, fields.get(field.name))
        if shown is not None:
            lines.append(f"{field.label.rstrip('.。:：')}: {shown}")
    if main and lines:
        return main + "\n\n" + "\n".join(lines)
    return main or "\n".join(lines)


def to_message(form: FormDefinition, fields: Mapping[str, Any], *, message_id: uuid.UUID,
               idempotency_key: str, reference: str, received_at: datetime, trace_id: str,
               attachments: Sequence[Attachment] = (), raw: str | None = None,
               flags: Iterable[str] = (), client_ip: str | None = None,
               user_agent: str | None = None) -> Message:
    """The common message of one clean submission (`fields` from `clean_fields`, with each
    file field's value replaced by the list of its stored filenames)."""
    text_field = form.text_role_field
    main = str(fields.get(text_field.name) or "") if text_field else ""
    name_field = form.name_field
    name = fields.get(name_field.name) if name_field else None
    channel_data: dict[str, Any] = {"reference": reference}
    if user_agent:
        channel_data["user_agent"] = user_agent[:512]
    if client_ip:
        channel_data["client_ip"] = client_ip
    return Message(
        id=message_id,
        idempotency_key=idempotency_key,
        channel=CHANNEL,
        account=form.id,
        kind="form_submission",
        sender=Sender(name=str(name) if name else None, identities=_identities(form, fields)),
        subject=_subject(form, fields, main),
        text=render_text(form, fields),
        attachments=list(attachments),
        form=Form(form_id=form.id, fields=dict(fields)),
        flags=list(dict.fromkeys(flags)),  # type: ignore[arg-type]
        channel_data=channel_data,
        received_at=received_at,
        raw=raw,
        trace_id=trace_id,
    )
