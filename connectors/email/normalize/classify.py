"""What kind of mail this is (flags), what it answers (thread hints), and what it reports on.

Every rule names the shape behind it: RFC 3834 `Auto-Submitted`, Exchange's out-of-office
headers, QQ Mail's header-less vacation reply, RFC 3464 delivery reports and RFC 8098 read
receipts, the plain-text bounces of Chinese providers, list mail (RFC 2369/2919), upstream spam
filters. No flag drops a mail: flags let routes match and stop every automatic answer.
"""

from __future__ import annotations

import email.message
import email.utils
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import re2

from .mime import Body, clean_header_value, parse_bytes, payload_bytes, raw_header

MAX_REFERENCES = 100
_REPLY_PREFIX = re.compile(
    r"^\s*(?:(?:re|fw|fwd|aw|wg|sv|vs|antw|tr|rif|r|回复|答复|转发|回覆|轉寄|轉發)"
    r"\s*(?:\[\d{1,4}\]|\(\d{1,4}\))?\s*[:：]\s*)+", re.IGNORECASE)
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,990}>")
_QQ_VACATION = "这是来自QQ邮箱的假期自动回复邮件"
_DAEMON = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon)@", re.IGNORECASE)
_STATUS = re.compile(r"^\s*([245])\.\d{1,3}\.\d{1,3}")


@dataclass(frozen=True)
class MailPolicy:
    """The part of the config a parse needs; plain data, so it crosses to the worker pool."""

    account: str
    address: str
    domain: str
    our_addresses: frozenset[str]
    our_domains: frozenset[str]
    forwarders: frozenset[str]
    tag_patterns: tuple[str, ...]
    auto_reply_subjects: tuple[str, ...]


def strip_subject(subject: str | None) -> str | None:
    """The subject without reply and forward prefixes (`Re:`, `RE[2]:`, `回复：`, …)."""
    if subject is None:
        return None
    return _REPLY_PREFIX.sub("", subject).strip()


def message_ids(value: str | None) -> list[str]:
    return _MESSAGE_ID.findall(value or "")


def trim_references(references: Sequence[str]) -> list[str]:
    """At most 100: the first (the thread's root) and the 99 newest (RFC 5322 section 3.6.4)."""
    unique = list(dict.fromkeys(references))
    if len(unique) <= MAX_REFERENCES:
        return unique
    return [unique[0], *unique[-(MAX_REFERENCES - 1):]]


@functools.lru_cache(maxsize=64)
def _tag(pattern: str) -> Any:
    return re2.compile(pattern)


def ticket_number_from_ids(ids: Sequence[str], policy: MailPolicy) -> str | None:
    """(1) One of our Message-IDs, `<N.<outbound id>@<our domain>>`, newest first."""
    for value in reversed(ids):
        match = re.fullmatch(r"<(\d{1,12})\.[^@<>]+@([^<>]+)>", value)
        if match and match.group(2).lower() in policy.our_domains:
            return match.group(1)
    return None


def ticket_number_from_plus(detail: str | None) -> str | None:
    """(2) A plus detail `t<N>` (`support+t1042@…`)."""
    match = re.fullmatch(r"t(\d{1,12})", detail or "", re.IGNORECASE)
    return match.group(1) if match else None


def ticket_number_from_subject(subject: str | None, patterns: Sequence[str]) -> str | None:
    """(3) A subject tag: `[#N]`, `[<prefix> #N]`, `工单号 #N`, `Ticket#N` (configurable)."""
    if not subject:
        return None
    for pattern in patterns:
        match = _tag(pattern).search(subject)
        if match:
            return str(match.group("number"))
    return None


def _addresses(value: str | None) -> list[str]:
    return [address.lower() for _name, address in email.utils.getaddresses(
        [value or ""]) if "@" in address]


def _header(message: email.message.Message, name: str) -> str:
    value = raw_header(message, name)
    return clean_header_value(value) if value is not None else ""


def _subject_is_auto(subject: str, stems: Sequence[str]) -> bool:
    lowered = subject.strip().lower()
    for stem in stems:
        stem_lower = stem.lower()
        if lowered.startswith(stem_lower):
            rest = lowered[len(stem_lower):].lstrip()
            if rest[:1] in (":", "：") or (rest == "" and stem_lower != "auto"):
                return True
    return False


def flags_of(message: email.message.Message, body: Body, *, subject: str | None, text: str,
             envelope_from: str | None, sender: str | None, policy: MailPolicy,
             report: dict[str, object]) -> list[str]:
    """The kernel flags this mail earns (in the vocabulary's order)."""
    flags: set[str] = set()
    auto_submitted = _header(message, "Auto-Submitted").lower()
    precedence = _header(message, "Precedence").lower()
    suppress = _header(message, "X-Auto-Response-Suppress").lower()
    null_path = envelope_from == ""
    dsn = body.report_type == "delivery-status"
    mdn = body.report_type == "disposition-notification"
    if (auto_submitted and auto_submitted != "no") \
            or _header(message, "X-Autoreply").lower() == "yes" \
            or message.get("X-Autorespond") is not None \
            or message.get("X-Autoresponder") is not None \
            or precedence == "auto_reply" \
            or (("all" in suppress or "oof" in suppress)
                and message.get("X-MS-Exchange-Inbox-Rules-Loop") is not None) \
            or _subject_is_auto(subject or "", policy.auto_reply_subjects) \
            or text.lstrip().startswith(_QQ_VACATION) \
            or mdn or (null_path and not dsn):
        flags.add("auto_reply")
    if dsn or (null_path and _DAEMON.match(sender or "")) or (
            _DAEMON.match(sender or "") and report.get("original_message_id")):
        flags.add("bounce")
        flags.discard("auto_reply")
    if precedence in ("bulk", "list", "junk") or message.get("List-Id") is not None \
            or message.get("List-Unsubscribe") is not None:
        flags.add("bulk")
    loop_from = {*_addresses(_header(message, "From")), *_addresses(_header(message, "X-Loop")),
                 *[v.strip().lower() for v in _header(message, "X-Loop").split(",") if v]}
    own_id = ticket_number_from_ids(message_ids(_header(message, "Message-ID")), policy)
    if not (dsn or mdn) and (loop_from & policy.our_addresses or own_id is not None):
        flags.add("loop")
    if _header(message, "X-Spam-Flag").upper().startswith("YES") \
            or _header(message, "X-Spam-Status").lower().startswith("yes"):
        flags.add("spam_suspect")
    if body.signed:
        flags.add("signed")
    if body.encrypted:
        flags.add("encrypted")
    if body.damage:
        flags.add("parse_error")
    order = ("auto_reply", "bounce", "bulk", "loop", "spam_suspect", "signed", "encrypted",
             "parse_error")
    return [flag for flag in order if flag in flags]


def read_report(body: Body, text: str) -> dict[str, object]:
    """A DSN's or MDN's facts, and the returned message's ids (for threading the bounce)."""
    report: dict[str, object] = {}
    recipients: list[dict[str, str]] = []
    for part in body.report_parts:
        kind = (part.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if kind in ("message/delivery-status", "message/disposition-notification"):
            fields = _fields(part)
            for block in fields:
                recipient = block.get("final-recipient") or block.get("original-recipient")
                if block.get("action") or recipient:
                    recipients.append({k: v for k, v in {
                        "final_recipient": (recipient or "").split(";", 1)[-1].strip(),
                        "action": block.get("action", "").lower(),
                        "status": block.get("status", ""),
                        "diagnostic": block.get("diagnostic-code", "")[:500],
                    }.items() if v})
                original = block.get("original-message-id")
                if original:
                    report["original_message_id"] = original.strip()
        elif kind in ("text/rfc822-headers", "message/rfc822"):
            headers = _returned_headers(part)
            if headers is not None:
                report.setdefault("original_message_id", _header(headers, "Message-ID") or None)
                report["original_in_reply_to"] = _header(headers, "In-Reply-To") or None
                report["original_references"] = message_ids(_header(headers, "References"))
    if recipients:
        report["recipients"] = recipients
    if not report.get("original_message_id"):
        found = re.search(r"(?im)^\s*Message-ID:\s*(<[^<>\s]+>)", text)
        if found:
            report["original_message_id"] = found.group(1)
    return {k: v for k, v in report.items() if v}


def permanent_failures(report: dict[str, object]) -> list[str]:
    """The recipients a DSN reports failed for good (a 5.x.x status)."""
    recipients = report.get("recipients")
    if not isinstance(recipients, list):
        return []
    return [r["final_recipient"].lower() for r in recipients
            if isinstance(r, dict) and r.get("final_recipient") and r.get("action") == "failed"
            and _STATUS.match(r.get("status", "5.0.0") or "5") and str(
                r.get("status", "5")).startswith("5")]


def _fields(part: email.message.Message) -> list[dict[str, str]]:
    """The header blocks of a delivery-status part (compat32 parses them as sub-messages)."""
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list):
        for block in payload:
            if isinstance(block, email.message.Message):
                blocks.append({k.lower(): clean_header_value(str(v)) for k, v in block.items()})
        return blocks
    text = payload_bytes(part).decode("utf-8", "replace")
    for chunk in re.split(r"\r?\n\r?\n", text):
        block = {}
        for line in re.split(r"\r?\n(?![ \t])", chunk):
            name, colon, value = line.partition(":")
            if colon:
                block[name.strip().lower()] = clean_header_value(value)
        if block:
            blocks.append(block)
    return blocks


def _returned_headers(part: email.message.Message) -> email.message.Message | None:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], email.message.Message):
        return payload[0]
    data = payload_bytes(part)
    return parse_bytes(data) if data else None
