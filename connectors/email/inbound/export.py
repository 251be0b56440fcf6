"""`intake email export`: a stored mail as an `.eml` again, with the trace lines SMTP gave it.

The raw kept is the DATA bytes as received and `channel_data.envelope` holds no clock, so both
reproduce; an exported mail gets what a final delivery adds (RFC 5321 4.4) from them:
`Return-Path:` with the envelope sender (`<>` for a null reverse-path: a bounce stays
recognisable) and a `Received:` line naming the client, its HELO, the protocol and the time
the gateway took the mail. A mail that came by IMAP or import has no SMTP envelope: its raw
goes out as it is (it carries its own trace lines). Nothing else in the raw changes.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import json
import re
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from intake import IntakeSettings, blob_store_for

HOSTNAME = "intake.local"  # the listener's name in its greeting and in `Received: by`
_NOT_ATOM = re.compile(r"[^\x21-\x7e]")  # nothing but visible ASCII from a client's HELO
_NOT_IN_PATH = re.compile(r"[\x00-\x20\x7f<>]")


def trace_headers(envelope: Mapping[str, Any], received_at: datetime, *,
                  by: str = HOSTNAME) -> list[str]:
    """`Return-Path:` and `Received:` for a mail taken over SMTP with `envelope` (the message's
    `channel_data.envelope`); none for one without an SMTP envelope."""
    sender = envelope.get("from")
    if sender is None:
        return []
    lines = [f"Return-Path: <{_NOT_IN_PATH.sub('', str(sender))[:512]}>"]
    helo = _NOT_ATOM.sub("", str(envelope.get("helo") or ""))[:255] or "unknown"
    client = _NOT_ATOM.sub("", str(envelope.get("client") or ""))[:64]
    recipients = [str(r) for r in envelope.get("to") or []]
    utf8 = not (str(sender) + "".join(recipients)).isascii()
    # RFC 3848 and RFC 6531 4.3: ESMTP, ESMTPS with TLS, UTF8SMTP(S) for internationalised mail.
    protocol = ("UTF8SMTP" if utf8 else "ESMTP") + ("S" if envelope.get("tls") else "")
    received = f"Received: from {helo}" + (f" ([{client}])" if client else "")
    received += f" by {by} with {protocol}"
    if len(recipients) == 1:  # one recipient only: a list would tell each about the others
        received += f" for <{_NOT_IN_PATH.sub('', recipients[0])[:512]}>"
    received += f"; {email.utils.format_datetime(received_at)}"
    return [*lines, _folded(received)]


def _folded(line: str) -> str:
    """A long `Received:` folded before `by`, `for` and the date (RFC 5322 2.2.3), as Postfix
    writes it; the HELO and the paths hold no space, so the keywords are the only matches."""
    if len(line) <= 78:
        return line
    return re.sub(r" (by|for) ", r"\n\t\1 ", line).replace("; ", ";\n\t", 1)


def exported_raw(raw: bytes, envelope: Mapping[str, Any] | None, received_at: datetime, *,
                 by: str = HOSTNAME) -> bytes:
    """`raw` with the trace lines of `trace_headers` on top, in the raw's own line ending."""
    lines = trace_headers(envelope or {}, received_at, by=by)
    if not lines:
        return raw
    first_end = raw.find(b"\n")
    newline = b"\r\n" if first_end < 0 or raw[first_end - 1:first_end] == b"\r" else b"\n"
    head = "\n".join(lines).encode("utf-8").replace(b"\n", newline)
    return head + newline + raw


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("message", help="a message as JSON, the way GET /api/v1/tickets/{id} "
                                        "lists it or the bus carries it (a file, or - for stdin)")
    parser.add_argument("-o", "--output", help="write the .eml here (default: stdout)")


def run(args: argparse.Namespace) -> int:
    source = sys.stdin.read() if args.message == "-" else Path(args.message).read_text("utf-8")
    try:
        message = json.loads(source)
        reference = str(message["raw"])
        received_at = datetime.fromisoformat(str(message["received_at"]))
    except (ValueError, KeyError, TypeError) as exc:
        print(f"not a stored message with its raw mail: {exc!r}", file=sys.stderr)
        return 2
    envelope = (message.get("channel_data") or {}).get("envelope")
    try:
        raw = asyncio.run(_read_blob(reference))
    except (FileNotFoundError, ValueError) as exc:
        print(f"the raw mail {reference} is not in the blob store: {exc}", file=sys.stderr)
        return 1
    mail = exported_raw(raw, envelope, received_at)
    if args.output:
        Path(args.output).write_bytes(mail)
    else:
        sys.stdout.buffer.write(mail)
        sys.stdout.buffer.flush()
    return 0


async def _read_blob(reference: str) -> bytes:
    blobs = blob_store_for(IntakeSettings())
    try:
        data: bytes = await blobs.get(reference)
        return data
    finally:
        await blobs.close()


__all__ = ["HOSTNAME", "arguments", "exported_raw", "run", "trace_headers"]
