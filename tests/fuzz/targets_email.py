"""Mail bytes to the common message: `parse_mail`, the worker's entry point, and the
`parse_error` message a mail it cannot read becomes. Nothing escapes; every result validates.
And the SMTP listener's DATA reader (`read_data`): any dot-stuffed data comes back as sent, ended
only by `<CRLF>.<CRLF>`, nothing read past it; any byte stream ends in a section or None."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import strategies as st

from connectors.email.inbound import parse_mail
from connectors.email.inbound.smtp import LINE_LIMIT
from connectors.email.inbound.smtp_data import DataSection, read_data
from connectors.email.normalize import Envelope, MailPolicy, unreadable_message
from intake.message import Message

from .harness import Target, hostile_text

FIXTURES = sorted((Path(__file__).resolve().parents[2] / "connectors" / "email" / "fixtures")
                  .glob("*.eml"))
SEEDS = [path.read_bytes() for path in FIXTURES]
POLICY = MailPolicy(
    account="support@shop.example", address="support@shop.example", domain="shop.example",
    our_addresses=frozenset({"support@shop.example"}), our_domains=frozenset({"shop.example"}),
    forwarders=frozenset(), tag_patterns=(r"\[#(?P<number>\d{1,12})\]",),
    auto_reply_subjects=("Automatic reply", "自动回复"))
RECEIVED = datetime(2026, 12, 5, tzinfo=UTC)
HEADERS = ("From", "To", "Subject", "Message-ID", "In-Reply-To", "References", "Date",
           "Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "Reply-To",
           "Auto-Submitted", "Precedence", "X-Loop", "List-Id", "MIME-Version")
CHARSETS = ("utf-8", "gb2312", "gbk", "big5", "iso-8859-1", "shift_jis", "ks_c_5601-1987",
            "x-unknown", "", "utf-7", "utf-16", "unicode-1-1-utf-7")
TYPES = ("text/plain", "text/html", "multipart/mixed", "multipart/alternative",
         "multipart/report; report-type=delivery-status", "message/rfc822",
         "multipart/signed", "application/pkcs7-mime; smime-type=signed-data",
         "text/calendar", "message/delivery-status", "text/rfc822-headers", "x/y", "")


@st.composite
def mails(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["seed", "mutated", "built", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400))
    if kind in ("seed", "mutated"):
        raw = bytearray(draw(st.sampled_from(SEEDS)))
        if kind == "mutated":
            for _ in range(draw(st.integers(1, 8))):
                at = draw(st.integers(0, len(raw)))
                raw[at:at + draw(st.integers(0, 20))] = draw(st.binary(max_size=20))
        return bytes(raw)
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        name = draw(st.one_of(st.sampled_from(HEADERS), hostile_text(10)))
        value = draw(st.one_of(
            hostile_text(),
            st.builds(lambda c, e, t: f"=?{c}?{e}?{t}?=", st.sampled_from(CHARSETS),
                      st.sampled_from("BbQqX"), hostile_text(20)),
            st.builds(lambda t, c: f'{t}; charset="{c}"; boundary="b"', st.sampled_from(TYPES),
                      st.sampled_from(CHARSETS))))
        lines.append(f"{name}: {value}".encode("utf-8", "surrogatepass"))
    body = draw(st.one_of(st.binary(max_size=300), hostile_text(200).map(
        lambda t: t.encode("utf-8", "surrogatepass"))))
    parts = draw(st.lists(st.tuples(st.sampled_from(TYPES), st.binary(max_size=80)),
                          max_size=4))
    nested = b"".join(b"--b\r\nContent-Type: " + t.encode() + b"\r\n\r\n" + p + b"\r\n"
                      for t, p in parts)
    closing = draw(st.sampled_from([b"--b--\r\n", b"", b"--b\r\n"]))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body + b"\r\n" + nested + closing


def check_mail(raw: bytes) -> None:
    envelope = Envelope(mail_from="li@example.cn", rcpt_to=("support@shop.example",))
    result = parse_mail(raw, envelope, [(POLICY, None)], RECEIVED, None)
    if isinstance(result, str):
        messages = [unreadable_message(raw, envelope, POLICY, RECEIVED, result)]
    else:
        messages = [parsed.message for parsed in result]
        for parsed in result:
            assert len(parsed.blobs) == len(parsed.message.attachments)
    for message in messages:
        Message.model_validate_json(message.model_dump_json())  # what the bus would carry
        assert message.idempotency_key.startswith("email:support@shop.example:")
        assert "\x00" not in message.text
        for value in (message.subject or "", *(a.filename for a in message.attachments)):
            assert "\r" not in value and "\n" not in value and "\x00" not in value


# Pieces that make line ends, dots at line starts and would-be terminators likely.
DATA_PIECES = (b".", b"..", b"\r", b"\n", b"\r\n", b"\n.\n", b"\n.\r\n", b"\r\n.\r\n", b"a",
               b"\x00", "中".encode())


def smtp_data() -> st.SearchStrategy[tuple[bool, bytes]]:
    """(stuffed, bytes): data a client dot-stuffs and ends, or a raw stream as it comes."""
    data = st.one_of(st.lists(st.sampled_from(DATA_PIECES), max_size=60).map(b"".join),
                     st.binary(max_size=300))
    return st.tuples(st.booleans(), data)


def check_smtp_data(case: tuple[bool, bytes]) -> None:
    stuffed, data = case
    wire = data
    if stuffed:  # RFC 5321 4.5.2: a line starting with "." gets one more
        wire = (b"." if data[:1] == b"." else b"") + data.replace(b"\r\n.", b"\r\n..")
        wire += b"\r\n.\r\nQUIT\r\n"

    async def read() -> tuple[DataSection | None, bytes]:
        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        reader.feed_data(wire)
        reader.feed_eof()
        section = await read_data(reader, max_bytes=1_000_000)
        return section, await reader.read()

    section, rest = asyncio.run(read())
    if stuffed:  # the CRLF before the dot is the data's own (RFC 5321 4.1.1.4)
        assert section is not None and section.content == data + b"\r\n", section
        assert rest == b"QUIT\r\n"


def targets() -> list[Target]:
    return [Target("email_mime", mails(), check_mail),
            Target("email_smtp_data", smtp_data(), check_smtp_data)]
