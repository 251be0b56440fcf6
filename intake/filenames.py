"""Attachment file names from any channel, made safe to store, show and download."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["clean_original_filename", "sanitize_filename"]

MAX_FILENAME_BYTES = 200
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FILENAME_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')
# In a file name these only deceive: C1 controls, line separators, and the bidi marks that make
# `invoice\u202efdp.exe` display as `invoiceexe.pdf` (Unicode TR#36 section 3.1).
_NAME_DECEPTIVE = re.compile("[\x80-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e"
                             "\u2066-\u2069]")


def sanitize_filename(name: str) -> str:
    """The last path part, without control or shell-hostile characters, at most 200 bytes.

    What the agent downloads: never a path, never empty (`attachment`), the extension kept
    when the name is cut.
    """
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[\\/]", name)[-1]
    name = _FILENAME_UNSAFE.sub("_", _NAME_DECEPTIVE.sub("", name)).strip().lstrip(".").strip()
    if len(name.encode()) > MAX_FILENAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:20] if dot and stem else ""
        stem = stem if ext else name
        while len((stem + "." + ext if ext else stem).encode()) > MAX_FILENAME_BYTES:
            stem = stem[:-1]
        name = stem + ("." + ext if ext else "")
    return name or "attachment"


def clean_original_filename(name: str) -> str:
    """The name as sent, kept for the agent, but never with NUL or control characters."""
    name = _NAME_DECEPTIVE.sub("\ufffd", _CONTROL.sub("\ufffd", name.replace("\x00", "")))
    return name[:1024] or "attachment"
