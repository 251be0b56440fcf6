"""`winmail.dat` (TNEF) from Outlook/Exchange: its files become attachments beside the `.dat`,
its body (plain, HTML or compressed RTF) the text when the mail has none.

The TNEF blobs are built here from the format's description (MS-OXTNEF: a signature, then
attributes of level, id, length, data and checksum), so each test says what it holds.
"""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.email.normalize import Envelope, MailPolicy, to_message
from connectors.email.normalize.containers import html_from_rtf, rtf_body

TNEF_SIGNATURE = 0x223E9F78
LEVEL_MESSAGE, LEVEL_ATTACHMENT = 1, 2
ATT_BODY, ATT_ATTACH_DATA, ATT_ATTACH_TITLE, ATT_ATTACH_RENDDATA = 0x800C, 0x800F, 0x8010, 0x9002
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"%%EOF\n"
POLICY = MailPolicy(account="support@shop.example", address="support@shop.example",
                    domain="shop.example", our_addresses=frozenset({"support@shop.example"}),
                    our_domains=frozenset({"shop.example"}), forwarders=frozenset(),
                    tag_patterns=(r"\[#(?P<number>\d{1,12})\]",), auto_reply_subjects=())


def attribute(level: int, name: int, kind: int, data: bytes) -> bytes:
    return (struct.pack("<BII", level, (kind << 16) | name, len(data)) + data
            + struct.pack("<H", sum(data) & 0xFFFF))


def tnef(files: list[tuple[bytes, bytes]], body: bytes | None = None) -> bytes:
    blob = struct.pack("<IH", TNEF_SIGNATURE, 0x1234)
    if body is not None:
        blob += attribute(LEVEL_MESSAGE, ATT_BODY, 0x0002, body)
    for name, data in files:
        blob += attribute(LEVEL_ATTACHMENT, ATT_ATTACH_RENDDATA, 0x0006, b"\x01\x00" + b"\0" * 12)
        blob += attribute(LEVEL_ATTACHMENT, ATT_ATTACH_TITLE, 0x0001, name + b"\x00")
        blob += attribute(LEVEL_ATTACHMENT, ATT_ATTACH_DATA, 0x0006, data)
    return blob


def outlook_mail(dat: bytes, text: str | None = "See the invoice attached.") -> bytes:
    parts = []
    if text is not None:
        parts.append(f"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n")
    encoded = base64.encodebytes(dat).decode().replace("\n", "\r\n")
    parts.append("--b\r\nContent-Type: application/ms-tnef; name=\"winmail.dat\"\r\n"
                 "Content-Transfer-Encoding: base64\r\n"
                 "Content-Disposition: attachment; filename=\"winmail.dat\"\r\n\r\n"
                 + encoded)
    return ("From: Wang <wang@corp.example>\r\nTo: support@shop.example\r\nSubject: invoice\r\n"
            "Message-ID: <tnef1@corp.example>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0800\r\n"
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n"
            + "".join(parts) + "--b--\r\n").encode()


def read(raw: bytes) -> tuple[list[tuple[str, str, int]], str, list[bytes]]:
    parsed = to_message(raw, Envelope(mail_from="wang@corp.example"), POLICY, datetime.now(UTC))
    message = parsed.message
    return ([(a.filename, a.content_type, a.size) for a in message.attachments], message.text,
            parsed.blobs)


def test_the_files_inside_winmail_dat_become_attachments_and_the_dat_is_kept() -> None:
    dat = tnef([(b"invoice-8812.pdf", PDF), (b"notes.txt", b"line one\r\n")])
    attachments, text, blobs = read(outlook_mail(dat))
    assert attachments == [("winmail.dat", "application/ms-tnef", len(dat)),
                           ("invoice-8812.pdf", "application/pdf", len(PDF)),
                           ("notes.txt", "text/plain", 10)]
    assert blobs[1] == PDF and blobs[0] == dat
    assert text == "See the invoice attached."


def test_the_tnef_body_is_the_text_when_the_mail_has_none() -> None:
    dat = tnef([(b"a.pdf", PDF)], body=b"Body only inside TNEF\x00")
    attachments, text, _ = read(outlook_mail(dat, text=None))
    assert text == "Body only inside TNEF"
    assert [a[0] for a in attachments] == ["winmail.dat", "a.pdf"]


def test_a_name_tnefparse_cannot_decode_still_gives_the_file() -> None:
    dat = tnef([("发票.pdf".encode("gbk"), PDF)])  # 8-bit, not UTF-8: tnefparse cannot read it
    attachments, _, blobs = read(outlook_mail(dat))
    assert [(a[0], a[2]) for a in attachments] == [("winmail.dat", len(dat)),
                                                    ("attachment-tnef-1.bin", len(PDF))]
    assert blobs[1] == PDF


def test_a_broken_winmail_dat_is_kept_as_it_is() -> None:
    attachments, text, _ = read(outlook_mail(b"not TNEF at all" * 10))
    assert [a[0] for a in attachments] == ["winmail.dat"]
    assert text == "See the invoice attached."


# Outlook's rich-text mail: the body only as compressed RTF (MS-OXRTFCP), names in the OEM
# code page. MAPI properties: a count, then type, id, one value (length, bytes padded to 4).
ATT_MAPI_PROPS, ATT_ATTACHMENT, ATT_OEM_CODEPAGE = 0x9003, 0x9005, 0x9007
PT_STRING8, PT_BINARY = 0x001E, 0x0102
PR_RTF_COMPRESSED, PR_ATTACH_LONG_FILENAME = 0x1009, 0x3707
RTF_PLAIN = (rb"{\rtf1\ansi\ansicpg936\deff0{\fonttbl{\f0\fnil SimSun;}}{\colortbl;\red0\green0"
             rb"\blue0;}\f0\fs20 \'c4\'fa\'ba\'c3\'a3\'ac\par order 8812 \u22351?broken\par}")
RTF_HTML = (rb"{\rtf1\ansi\ansicpg1252\fromhtml1 \deff0{\fonttbl{\f0\fswiss Arial;}}"
            rb"{\*\htmltag19 <html>}{\*\htmltag34 <head>}{\*\htmltag241 <style>p \{margin:0\}"
            rb"</style>}{\*\htmltag41 </head>}{\*\htmltag50 <body>}{\*\htmltag64 <p>}"
            rb"\htmlrtf {\htmlrtf0 Hello, the parcel {\*\htmltag84 <b>}\htmlrtf \b \htmlrtf0 "
            rb"arrived broken{\*\htmltag92 </b>}\htmlrtf \b0 \htmlrtf0 .\htmlrtf }\htmlrtf0 "
            rb"{\*\htmltag72 </p>}\htmlrtf \par \htmlrtf0 {\*\htmltag64 <p>}Order 8812"
            rb"{\*\htmltag72 </p>}{\*\htmltag0 <script>alert(1)</script>}"
            rb"{\*\htmltag58 </body>}{\*\htmltag27 </html>}}")


def mapi(*props: tuple[int, int, bytes]) -> bytes:
    data = struct.pack("<I", len(props))
    for kind, name, value in props:
        data += struct.pack("<HHII", kind, name, 1, len(value)) + value
        data += b"\0" * (-len(value) % 4)
    return data


def rich_tnef(rtf: bytes | None, files: tuple[tuple[bytes, bytes, bytes | None], ...] = (),
              codepage: int | None = 936) -> bytes:
    from compressed_rtf import compress  # type: ignore[import-untyped]

    blob = struct.pack("<IH", TNEF_SIGNATURE, 0x1234)
    if codepage is not None:
        blob += attribute(LEVEL_MESSAGE, ATT_OEM_CODEPAGE, 0x0006, struct.pack("<II", codepage, 0))
    if rtf is not None:
        compressed = compress(rtf) if rtf.startswith(b"{\\rtf") else rtf
        blob += attribute(LEVEL_MESSAGE, ATT_MAPI_PROPS, 0x0006,
                          mapi((PT_BINARY, PR_RTF_COMPRESSED, compressed)))
    for short, data, long_name in files:
        blob += attribute(LEVEL_ATTACHMENT, ATT_ATTACH_RENDDATA, 0x0006, b"\x01\x00" + b"\0" * 12)
        blob += attribute(LEVEL_ATTACHMENT, ATT_ATTACH_TITLE, 0x0001, short + b"\x00")
        blob += attribute(LEVEL_ATTACHMENT, ATT_ATTACH_DATA, 0x0006, data)
        if long_name is not None:
            blob += attribute(LEVEL_ATTACHMENT, ATT_ATTACHMENT, 0x0006,
                              mapi((PT_STRING8, PR_ATTACH_LONG_FILENAME, long_name + b"\x00")))
    return blob


def read_message(raw: bytes) -> tuple[str, str | None, list[str]]:
    message = to_message(raw, Envelope(mail_from="wang@corp.example"), POLICY,
                         datetime.now(UTC)).message
    return message.text, message.html, [a.filename for a in message.attachments]


def test_an_rtf_only_body_is_decompressed_and_read_as_text_in_its_code_page() -> None:
    text, html, names = read_message(outlook_mail(rich_tnef(RTF_PLAIN), text=None))
    assert text == "您好，\norder 8812 坏broken"
    assert html is None and names == ["winmail.dat"]


def test_rtf_encapsulating_html_gives_the_html_sanitised_and_its_text() -> None:
    text, html, _ = read_message(outlook_mail(rich_tnef(RTF_HTML, codepage=1252), text=None))
    assert text == "Hello, the parcel arrived broken.\n\nOrder 8812"
    assert html is not None and "<b>arrived broken</b>" in html
    assert "script" not in html and "alert" not in text and "margin" not in text


def test_the_mail_text_wins_over_the_rtf_body() -> None:
    text, _, _ = read_message(outlook_mail(rich_tnef(RTF_PLAIN)))
    assert text == "See the invoice attached."


def test_a_broken_compressed_rtf_leaves_the_dat_and_no_text() -> None:
    damaged = struct.pack("<IIII", 400, 9000, 0x75465A4C, 0) + bytes(range(200))
    text, html, names = read_message(outlook_mail(rich_tnef(damaged), text=None))
    assert (text, html, names) == ("", None, ["winmail.dat"])


def test_file_names_in_the_tnef_code_page_are_read() -> None:
    dat = rich_tnef(None, (("发票.pdf".encode("gbk"), PDF, None),
                           (b"REPORT~1.XLS", b"xls", "客户报表-十二月.xls".encode("gbk"))))
    attachments, _, blobs = read(outlook_mail(dat))
    assert [(a[0], a[2]) for a in attachments] == [("winmail.dat", len(dat)),
                                                    ("发票.pdf", len(PDF)),
                                                    ("客户报表-十二月.xls", 3)]
    assert blobs[1] == PDF


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_any_compressed_rtf_bytes_give_text_or_nothing(data: bytes) -> None:
    text, html = rtf_body(data)
    assert isinstance(text, str) and (html is None or isinstance(html, str))


RTF_ALPHABET = st.sampled_from(list("{}\\*'0123456789abcdefu -htmlragpr<>\r\n"))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=RTF_ALPHABET, max_size=400), st.booleans())
def test_any_rtf_markup_gives_a_string(markup: str, html: bool) -> None:
    from compressed_rtf import compress  # type: ignore[import-untyped]

    document = ("{\\rtf1\\fromhtml1 " if html else "{\\rtf1 ") + markup
    assert isinstance(html_from_rtf(document, "cp1252"), str)
    text, found = rtf_body(compress(document.encode("latin-1")))
    assert isinstance(text, str) and (found is None or isinstance(found, str))
