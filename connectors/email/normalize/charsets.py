"""Charset labels read as the WHATWG Encoding Standard reads them, and sniffing when they lie.

Mailers mislabel constantly: Foxmail and Outlook label GBK `gb2312` (Python's gb2312 turns 堃,
喆, 镕 into replacement characters), Outlook's smart quotes come labelled `iso-8859-1`,
`ks_c_5601-1987` means cp949. So labels map to the superset every browser uses
(https://encoding.spec.whatwg.org/#names-and-labels), valid UTF-8 wins over a single-byte label,
and a missing, unknown or wrong label is sniffed with charset-normalizer on a body (never on a
ten-character subject: it calls a short GB18030 subject Shift_JIS).
"""

from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes

# Label -> the codec that decodes what that label means in practice.
SUPERSETS: dict[str, str] = {}
for _codec, _labels in {
    "gb18030": ("gb2312", "gbk", "x-gbk", "cp936", "gb_2312-80", "gb_2312", "chinese",
                "csgb2312", "csiso58gb231280", "iso-ir-58", "euc-cn", "gb18030", "ms936",
                "windows-936"),
    "cp1252": ("iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1", "l1", "us-ascii",
               "ascii", "ansi_x3.4-1968", "cp819", "ibm819", "windows-1252", "cp1252",
               "x-cp1252", "iso-ir-100", "csisolatin1", "us"),
    "cp949": ("ks_c_5601-1987", "ks_c_5601-1989", "euc-kr", "korean", "ksc5601", "ksc_5601",
              "cseuckr", "csksc56011987", "iso-ir-149", "windows-949", "cp949"),
    "cp932": ("shift_jis", "shift-jis", "sjis", "x-sjis", "ms_kanji", "csshiftjis",
              "windows-31j", "ms932", "cp932"),
    "big5hkscs": ("big5", "big5-hkscs", "x-x-big5", "cn-big5", "csbig5"),
    "utf-8": ("utf-8", "utf8", "unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8",
              "x-unicode20utf8"),
}.items():
    for _label in _labels:
        SUPERSETS[_label] = _codec
SINGLE_BYTE = {"cp1252"}
SNIFF_MIN_BYTES = 64  # below this charset-normalizer guesses wrong too often
_META = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]{1,40})""",
                   re.IGNORECASE)


def codec_for(label: str | None) -> str | None:
    """The Python codec for a MIME charset label, or None when nobody knows it."""
    if not label:
        return None
    label = label.strip().strip('"').lower()
    if label in SUPERSETS:
        return SUPERSETS[label]
    try:
        return codecs.lookup(label).name
    except (LookupError, ValueError):
        return None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_UNDEFINED_1252 = frozenset((0x81, 0x8D, 0x8F, 0x90, 0x9D))


def _cp1252(data: bytes) -> str:
    """windows-1252 as WHATWG has it: the five bytes cp1252 leaves undefined are C1 controls."""
    if not any(byte in _UNDEFINED_1252 for byte in data):
        return data.decode("cp1252")
    return "".join(chr(byte) if byte in _UNDEFINED_1252 else bytes((byte,)).decode("cp1252")
                   for byte in data)


def _strict(data: bytes, codec: str) -> str | None:
    if codec == "cp1252":
        return _cp1252(data)
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return None


def sniff(data: bytes) -> str | None:
    """charset-normalizer's best guess for a body; None when it has none."""
    best = from_bytes(data).best()
    return None if best is None or not best.encoding else best.encoding


def html_meta_charset(data: bytes) -> str | None:
    """The `<meta charset>` (or http-equiv content-type) of an HTML document's head."""
    match = _META.search(data[:4096])
    return match.group(1).decode("ascii") if match else None


def decode_body(data: bytes, label: str | None, *, html: bool = False) -> tuple[str, str]:
    """Text of a body part and the codec used: the label read as WHATWG does, checked."""
    if not data or data.isascii():
        return data.decode("ascii"), "ascii"
    codec = codec_for(label)
    if codec is None and html:
        codec = codec_for(html_meta_charset(data))
    if (codec is None or codec in SINGLE_BYTE) and _is_utf8(data):
        return data.decode("utf-8"), "utf-8"
    if codec is not None:
        text = _strict(data, codec)
        if text is not None:
            return text, codec
    guessed = sniff(data) if len(data) >= SNIFF_MIN_BYTES else None
    for candidate in (guessed, "gb18030"):
        if candidate:
            text = _strict(data, codec_for(candidate) or candidate)
            if text is not None:
                return text, codec_for(candidate) or candidate
    return data.decode(codec or "utf-8", errors="replace"), codec or "utf-8"


def decode_header_bytes(data: bytes, hint: str | None = None) -> str:
    """8-bit header bytes without a charset: UTF-8, else the body's charset, else GB18030."""
    if data.isascii():
        return data.decode("ascii")
    if _is_utf8(data):
        return data.decode("utf-8")
    for candidate in (codec_for(hint), "gb18030", "cp1252"):
        if candidate:
            text = _strict(data, candidate)
            if text is not None:
                return text
    return data.decode("utf-8", errors="replace")


def decode_labelled(data: bytes, label: str) -> str | None:
    """Bytes in a labelled encoded word: None when nobody knows the label (kept literally)."""
    codec = codec_for(label.split("*", 1)[0])
    if codec is None:
        return None
    if codec in SINGLE_BYTE and not data.isascii() and _is_utf8(data):
        return data.decode("utf-8")
    text = _strict(data, codec)
    if text is None:
        text = decode_header_bytes(data, codec) if codec != "utf-8" else data.decode(
            "utf-8", errors="replace")
    return text
