"""`winmail.dat` (TNEF) from Outlook/Exchange: its files become attachments beside the `.dat`.

The TNEF blobs are built here from the format's description (MS-OXTNEF: a signature, then
attributes of level, id, length, data and checksum), so each test says what it holds.
"""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime

from connectors.email.normalize import Envelope, MailPolicy, to_message

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
