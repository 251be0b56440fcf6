"""Hostile attachment names: stored by hash, `filename` sanitised, `original_filename` inert."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from intake.blobs import FileBlobStore
from intake.testing import RecordingPublisher

from .webform import extended, multipart, quoted, webform

HOSTILE = {
    "traversal_posix": "../../../../etc/passwd",
    "traversal_windows": "..\\..\\windows\\system32\\drivers\\etc\\hosts",
    "absolute": "/etc/shadow",
    "nul_byte": "invoice.pdf\x00.exe",
    "control_characters": "a\x01\x1b[31m\x7fb.pdf",
    "rtl_override": "invoice\u202efdp.exe",
    "bidi_isolates": "\u2066report\u2069\u200f.pdf",
    "c1_and_line_separators": "x\x85y\u2028z.pdf",
    "very_long": "é" * 1200 + ".pdf",
    "dot_files": "../.htaccess",
    "only_dots": "..",
    "percent_encoded_traversal": "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
}
DECEPTIVE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                       "\u2066-\u2069]")


@pytest.mark.parametrize("name", list(HOSTILE.values()), ids=list(HOSTILE))
async def test_hostile_file_names_are_stored_by_hash_and_sanitised(tmp_path: Path,
                                                                   name: str) -> None:
    publisher = RecordingPublisher()
    blobs = FileBlobStore(tmp_path / "blobs")
    data = b"%PDF-1.4 hostile name test"
    content_type, body = multipart([(extended(name), data)])
    async with webform(publisher, blobs) as client:
        response = await client.post("/forms/contact/submissions", data=body,
                                     headers={"Content-Type": content_type,
                                              "Accept": "application/json"})
        assert response.status == 201, await response.text()
    (attachment,) = publisher.messages[0].attachments
    # The blob store names by content: nothing of the name reaches the disk.
    stored = [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()]
    assert all(re.fullmatch(r"blobs/([0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}|pack\.sqlite3.*)",
                            str(p)) for p in stored), stored
    assert attachment.blob == f"sha256:{attachment.sha256}"
    assert await blobs.get(attachment.blob) == data
    # The name agents see and a download would use: one plain path part.
    assert attachment.filename and not attachment.filename.startswith(".")
    assert not re.search(r'[/\\<>:"|?*]', attachment.filename)
    assert not DECEPTIVE.search(attachment.filename), ascii(attachment.filename)
    assert len(attachment.filename.encode()) <= 200
    # The name as sent is kept for the agent, minus what could do harm on a screen or a log.
    original = attachment.original_filename or ""
    assert not DECEPTIVE.search(original), ascii(original)
    assert len(original) <= 1024


async def test_the_rtl_trick_cannot_hide_the_real_extension(tmp_path: Path) -> None:
    publisher = RecordingPublisher()
    content_type, body = multipart([(quoted("invoice\u202efdp.exe"), b"MZ")])
    async with webform(publisher) as client:
        response = await client.post("/forms/contact/submissions", data=body,
                                     headers={"Content-Type": content_type,
                                              "Accept": "application/json"})
        assert response.status == 201, await response.text()
    (attachment,) = publisher.messages[0].attachments
    assert attachment.filename == "invoicefdp.exe"
    assert attachment.original_filename == "invoice\ufffdfdp.exe"


@pytest.mark.parametrize("raw", [b'="a\x00b.pdf"', b'="a\x01b.pdf"', b'="a\rb.pdf"'],
                         ids=["nul", "control", "carriage_return"])
async def test_raw_control_bytes_in_a_part_header_are_a_400(raw: bytes) -> None:
    publisher = RecordingPublisher()
    content_type, body = multipart([(raw, b"x")])
    async with webform(publisher) as client:
        response = await client.post("/forms/contact/submissions", data=body,
                                     headers={"Content-Type": content_type,
                                              "Accept": "application/json"})
        assert response.status == 400
        assert (await response.json())["error"] == "malformed_body"
    assert publisher.messages == []
