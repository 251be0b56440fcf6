"""From a mail's bytes and envelope to the common message: pure, run in the worker pool.

`to_message` returns the message and the attachments' bytes (their blob references are their
sha256, so the worker names them and the edge stores them); `unreadable_message` is what a mail
becomes when it cannot be read at all (a timeout, a crashed worker, a MIME bomb): its readable
headers, the raw, the flag `parse_error`. Nothing here opens a file or reads the clock.
"""

from __future__ import annotations

import email.message
import email.utils
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from intake import (
    Attachment,
    Identity,
    Message,
    Sender,
    Thread,
    blob_ref,
    clean_original_filename,
    sanitize_filename,
)

from .classify import (
    MailPolicy,
    flags_of,
    message_ids,
    permanent_failures,
    read_report,
    strip_subject,
    ticket_number_from_ids,
    ticket_number_from_plus,
    ticket_number_from_subject,
    trim_references,
)
from .mime import (
    Body,
    clean_header_value,
    decode_header,
    parse_bytes,
    raw_header,
    read_body,
    unescape,
)

__all__ = ["Envelope", "MailPolicy", "Parsed", "to_message", "unreadable_message"]

MAX_TEXT_CHARS = 1_000_000
MAX_KEY_ID_CHARS = 900  # the key stays under the model's 1,024 characters
UNREADABLE_TEXT = ("This mail could not be decoded ({reason}). The original is kept with the "
                   "ticket; download it to read it.")


@dataclass(frozen=True)
class Envelope:
    """What SMTP (or IMAP, or an import) knew beside the bytes; never a clock."""

    mail_from: str | None = None  # "" is the null reverse-path of a notification
    rcpt_to: tuple[str, ...] = ()
    client: str | None = None
    helo: str | None = None
    tls: bool = False

    def as_data(self) -> dict[str, Any]:
        return {"from": self.mail_from, "to": list(self.rcpt_to), "client": self.client,
                "helo": self.helo, "tls": self.tls}


@dataclass
class Parsed:
    """A message and the bytes of its attachments, to be stored before it is published."""

    message: Message
    blobs: list[bytes] = field(default_factory=list)
    permanent_failures: list[str] = field(default_factory=list)


def to_message(raw: bytes, envelope: Envelope, policy: MailPolicy, received_at: datetime, *,
               plus_detail: str | None = None,
               channel_data: dict[str, Any] | None = None) -> Parsed:
    """The common message for one account; `MailTooDeep` and any other error are the
    caller's to turn into `unreadable_message`."""
    root = parse_bytes(raw)
    body = read_body(root)
    hint = body.charset
    subject = decode_header(_get(root, "Subject"), hint)
    text = "\n\n".join(t.strip("\n") for t in body.texts if t.strip()) if len(
        body.texts) > 1 else (body.texts[0] if body.texts else "")
    text = text.replace("\x00", "").rstrip()
    if body.damage and not text.strip():
        text = UNREADABLE_TEXT.format(reason=body.damage)
    report = read_report(body, text)
    name, address = _sender(root, envelope, policy, hint)
    flags = flags_of(root, body, subject=subject, text=text, envelope_from=envelope.mail_from,
                     sender=address, policy=policy, report=report)
    message_id = _first_id(_get(root, "Message-ID"))
    in_reply_to = _first_id(_get(root, "In-Reply-To"))
    references = message_ids(_get(root, "References"))
    if "bounce" in flags or body.report_type == "disposition-notification":
        # A bounce or receipt threads as the message it reports on.
        original = report.get("original_message_id")
        in_reply_to = original if isinstance(original, str) else in_reply_to
        returned = report.get("original_references")
        references = [*(returned if isinstance(returned, list) else []),
                      *([original] if isinstance(original, str) else [])]
    references = trim_references(references)
    ticket_number = (ticket_number_from_ids([*references, *([in_reply_to] if in_reply_to
                                                             else [])], policy)
                     or ticket_number_from_plus(plus_detail)
                     or ticket_number_from_subject(subject, policy.tag_patterns))
    attachments, blobs = _attachments(body)
    occurred_at = _date(_get(root, "Date"))  # unreadable: None, the received time counts
    data: dict[str, Any] = {"envelope": envelope.as_data(), **(channel_data or {})}
    if plus_detail:
        data["plus_detail"] = plus_detail
    if report:
        data["dsn"] = report
    if body.damage:
        data["parse_error"] = body.damage
    auth = root.get_all("Authentication-Results") or []
    if auth:
        data["authentication_results"] = [clean_header_value(str(v))[:2000] for v in auth]
    html = body.html if body.html is not None and len(body.html) <= MAX_TEXT_CHARS else None
    message = Message(
        idempotency_key=idempotency_key(policy.account, message_id, digest(
            address, _get(root, "Date"), subject, body, attachments)),
        channel="email", account=policy.account, kind="message",
        sender=Sender(name=name, identities=[Identity(kind="email", value=address)]
                      if address else []),
        thread=Thread(message_id=message_id, in_reply_to=in_reply_to, references=references,
                      subject=strip_subject(subject), ticket_number=ticket_number),
        subject=subject, text=text[:MAX_TEXT_CHARS], html=html, attachments=attachments,
        flags=cast(Any, flags), channel_data=data, occurred_at=occurred_at, received_at=received_at,
        raw=blob_ref(raw))
    return Parsed(message, blobs, _failures(flags, report))


def unreadable_message(raw: bytes, envelope: Envelope, policy: MailPolicy,
                       received_at: datetime, reason: str, *, plus_detail: str | None = None,
                       channel_data: dict[str, Any] | None = None) -> Message:
    """What a mail that could not be read becomes: never dropped."""
    headers = _headers_only(raw)
    subject = decode_header(_get(headers, "Subject")) if headers is not None else None
    message_id = _first_id(_get(headers, "Message-ID")) if headers is not None else None
    name, address = (_sender(headers, envelope, policy, None) if headers is not None
                     else (None, envelope.mail_from or None))
    data: dict[str, Any] = {"envelope": envelope.as_data(), "parse_error": reason,
                            **(channel_data or {})}
    if plus_detail:
        data["plus_detail"] = plus_detail
    return Message(
        idempotency_key=idempotency_key(policy.account, message_id,
                                        hashlib.sha256(raw).hexdigest()[:32]),
        channel="email", account=policy.account, kind="message",
        sender=Sender(name=name, identities=[Identity(kind="email", value=address)]
                      if address else []),
        thread=Thread(message_id=message_id, subject=strip_subject(subject)),
        subject=subject, text=UNREADABLE_TEXT.format(reason=reason), flags=["parse_error"],
        channel_data=data, occurred_at=None, received_at=received_at, raw=blob_ref(raw))


def idempotency_key(account: str, message_id: str | None, content_digest: str) -> str:
    """`email:<account>:<Message-ID>:<digest>`; the digest alone without a Message-ID."""
    if message_id is None:
        return f"email:{account}:{content_digest}"
    if len(message_id) > MAX_KEY_ID_CHARS:
        message_id = "sha256-" + hashlib.sha256(message_id.encode()).hexdigest()
    return f"email:{account}:{message_id}:{content_digest}"


def digest(address: str | None, date: str | None, subject: str | None, body: Body,
           attachments: list[Attachment]) -> str:
    """The content, not the transport: From, Date, Subject, decoded text, attachments.

    Trace headers, folding and line endings are left out, so a client's retry, or one mail
    seen by SMTP and by IMAP, has one digest.
    """
    hashed = hashlib.sha256()
    for piece in (address or "", " ".join((date or "").split()), subject or "",
                  *("\n".join(line.rstrip() for line in t.splitlines()).strip()
                    for t in body.texts),
                  *(a.sha256 or "" for a in attachments)):
        hashed.update(piece.encode("utf-8", "surrogatepass"))
        hashed.update(b"\x00")
    return hashed.hexdigest()[:32]


def _get(message: email.message.Message | None, name: str) -> str | None:
    """A header as received; 8-bit bytes left for `decode_header` (with the body's charset)
    in names and subjects, read as text at once elsewhere."""
    value = raw_header(message, name)
    if value is None or name in ("Subject", "From", "Reply-To"):
        return value
    return unescape(value)


def _first_id(value: str | None) -> str | None:
    ids = message_ids(value)
    if ids:
        return ids[0]
    cleaned = clean_header_value(value or "")
    return cleaned[:998] or None


def _sender(root: email.message.Message, envelope: Envelope, policy: MailPolicy,
            hint: str | None) -> tuple[str | None, str | None]:
    """From; Reply-To only when From is ours or a forwarder; the envelope sender without
    From."""
    from_name, from_address = _address(decode_header(_get(root, "From"), hint))
    if from_address and from_address.lower() in policy.our_addresses | policy.forwarders:
        reply_name, reply_address = _address(decode_header(_get(root, "Reply-To"), hint))
        if reply_address:
            return reply_name or from_name, reply_address
    if from_address:
        return from_name, from_address
    return from_name, envelope.mail_from or None


def _address(value: str | None) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    pairs = email.utils.getaddresses([value])
    if len(pairs) > 1 and sum("@" in address for _, address in pairs) == 1:
        # `Li, Lei <lilei@…>`: an unquoted comma split the name; it is all before the `<`.
        angle = re.search(r"<([^<>@\s]+@[^<>\s]+)>", value)
        if angle:
            whole = value[:angle.start()].strip().strip('"').strip()
            return (clean_header_value(whole)[:512] or None), clean_header_value(
                angle.group(1))[:512]
    for name, address in pairs:
        if "@" in address:
            return (clean_header_value(name)[:512] or None), clean_header_value(address)[:512]
    # Unquoted commas in a display name split it: take the address wherever it is.
    found = re.search(r"<([^<>@\s]+@[^<>\s]+)>|([^\s<>,;\"]+@[^\s<>,;\"]+)", value)
    if found:
        found_address: str = found.group(1) or found.group(2)
        found_name = value[:found.start()].strip().strip('"').strip()
        return (found_name[:512] or None), found_address[:512]
    return None, None


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def _attachments(body: Body) -> tuple[list[Attachment], list[bytes]]:
    attachments: list[Attachment] = []
    blobs: list[bytes] = []
    for part in body.parts:
        ref = blob_ref(part.data)
        cleaned = sanitize_filename(part.filename)
        attachments.append(Attachment(
            filename=cleaned, original_filename=clean_original_filename(part.filename)
            if cleaned != part.filename else None,
            content_type=part.content_type, size=len(part.data), sha256=ref.split(":", 1)[1],
            blob=ref, content_id=part.content_id, inline=part.inline))
        blobs.append(part.data)
    return attachments, blobs


def _headers_only(raw: bytes) -> email.message.Message | None:
    end = raw.find(b"\r\n\r\n")
    end = raw.find(b"\n\n") if end < 0 else end
    head = raw[: end if end >= 0 else min(len(raw), 256 * 1024)][: 256 * 1024]
    try:
        return parse_bytes(head + b"\r\n\r\n")
    except Exception:
        return None


def _failures(flags: list[str], report: dict[str, Any]) -> list[str]:
    return permanent_failures(report) if "bounce" in flags else []

