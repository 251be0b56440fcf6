"""Mail wrapped in another format: opaque S/MIME (`signed-data`, `compressed-data`) and
Outlook's TNEF.

Both hide the customer's words inside a binary structure that no MIME walk sees: an opaque
S/MIME mail is one `smime.p7m` part whose PKCS #7 `SignedData` carries the real MIME body, and
an Outlook `winmail.dat` carries files and a body (plain, HTML or compressed RTF). Reading them
here keeps `mime.py` a MIME walk. No signature is verified and nothing is decrypted (out of
scope): a signed mail is read as written and flagged `signed`.
"""

from __future__ import annotations

import codecs
import mimetypes
import re
import zlib
from dataclasses import dataclass, field

from asn1crypto import cms  # type: ignore[import-untyped]
from compressed_rtf import decompress  # type: ignore[import-untyped]
from striprtf.striprtf import rtf_to_text  # type: ignore[import-untyped]
from tnefparse import TNEF  # type: ignore[import-untyped]

from .charsets import codec_for, decode_body

SMIME_TYPES = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
MAX_OPAQUE_BYTES = 64 * 1024 * 1024  # compressed S/MIME inflated past this is not read
MAX_RTF_BYTES = 20 * 1024 * 1024  # a larger decompressed RTF body stays in the .dat alone


class SmimeUnreadable(Exception):
    """An opaque S/MIME part whose content could not be read; the mail is still kept."""


def opaque_content(blob: bytes) -> tuple[str, bytes | None]:
    """What an opaque S/MIME blob carries: `("signed", content)` for a PKCS #7 / CMS
    `SignedData` (DER or BER, chunked octet strings included), `("compressed", content)` for
    RFC 3274 `CompressedData` (zlib, inflated to at most `MAX_OPAQUE_BYTES`), `("other",
    None)` for anything else (`enveloped-data`: encrypted, not ours to read).

    Raises `SmimeUnreadable` with a short reason for a blob that is not PKCS #7 at all, is cut
    short, carries nothing (a detached signature sent as if opaque), or inflates too far.
    """
    try:
        info = cms.ContentInfo.load(blob)
        kind = info["content_type"].native
        if kind not in ("signed_data", "compressed_data"):
            return "other", None
        content = info["content"]["encap_content_info"]["content"].native
    except Exception as exc:  # asn1crypto raises ValueError, TypeError, KeyError on damage
        raise SmimeUnreadable("the PKCS #7 structure is damaged or cut short") from exc
    if content is None:
        raise SmimeUnreadable("the PKCS #7 structure carries no content")
    if not isinstance(content, bytes):
        raise SmimeUnreadable("the content is not a byte string")
    if kind == "signed_data":
        return "signed", content
    inflater = zlib.decompressobj()
    try:
        inflated = inflater.decompress(content, MAX_OPAQUE_BYTES)
    except zlib.error as exc:
        raise SmimeUnreadable("the compressed content does not inflate") from exc
    if inflater.unconsumed_tail:
        raise SmimeUnreadable(f"the compressed content inflates past {MAX_OPAQUE_BYTES} bytes")
    return "compressed", inflated


@dataclass
class TnefContents:
    """What a `winmail.dat` holds: its files (name, type, bytes) and its body."""

    files: list[tuple[str, str, bytes]] = field(default_factory=list)
    text: str = ""
    html: str | None = None  # HTML the body carried (as HTML, or encapsulated in RTF)


def read_tnef(data: bytes) -> TnefContents | None:
    """The files and body of a TNEF blob; None when tnefparse cannot read it.

    File names are decoded with the blob's own code page (`attOemCodepage`: an Outlook in
    Chinese writes GBK names) when they are not UTF-8; a name that reads in neither becomes
    `attachment-tnef-N.bin`. The body: the plain text, else the HTML, else the compressed RTF
    (MS-OXRTFCP) decompressed and read as text, or, when the RTF encapsulates HTML
    (`\\fromhtml1`, what Outlook sends for an HTML mail), as that HTML.
    """
    try:
        tnef = TNEF(data, do_checksum=False)
    except Exception:
        return None
    codepage = tnef.codepage if isinstance(tnef.codepage, str) else None
    contents = TnefContents()
    for number, attachment in enumerate(tnef.attachments, start=1):
        name = _tnef_name(attachment, codepage) or f"attachment-tnef-{number}.bin"
        payload = _single(attachment.data)
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        contents.files.append((name, kind, payload if isinstance(payload, bytes) else b""))
    contents.text = _tnef_text(tnef.body, codepage)
    if not contents.text.strip():
        contents.html = _tnef_text(tnef.htmlbody, codepage) or None
        if contents.html is None:
            contents.text, contents.html = rtf_body(_single(getattr(tnef, "_rtfbody", None)))
    return contents


def rtf_body(compressed: object) -> tuple[str, str | None]:
    """(text, None) or ("", html) from a compressed RTF body; ("", None) when there is none
    or it cannot be read (the `.dat` keeps it)."""
    if not isinstance(compressed, bytes) or len(compressed) < 16:
        return "", None
    if int.from_bytes(compressed[4:8], "little") > MAX_RTF_BYTES:
        return "", None  # the header's raw size: a bomb is not inflated to find out
    try:
        rtf = decompress(compressed + b"\x00")  # as tnefparse does: a padded last run
    except Exception:
        return "", None
    if not isinstance(rtf, bytes) or len(rtf) > MAX_RTF_BYTES:
        return "", None
    markup = rtf.rstrip(b"\x00").decode("latin-1")  # RTF is 7-bit; \\'xx escapes carry bytes
    codec = _rtf_codec(markup)
    try:
        if "\\fromhtml" in markup[:4096]:
            html = html_from_rtf(markup, codec)
            return ("", html) if html.strip() else ("", None)
        text = rtf_to_text(markup, encoding=codec, errors="replace")
    except Exception:  # a hostile document: the .dat still keeps it
        return "", None
    if not isinstance(text, str) or not text.strip():
        return "", None
    return text.replace("\r\n", "\n").strip("\n"), None


_RTF_TOKEN = re.compile(r"\\([a-zA-Z]+)(-?\d+)? ?|\\'([0-9a-fA-F]{2})|\\(.)|([{}])|([^\\{}\r\n]+)"
                        r"|[\r\n]+", re.DOTALL)
_RTF_SKIPPED = frozenset({"fonttbl", "colortbl", "stylesheet", "info", "pict", "object"})


def html_from_rtf(markup: str, codec: str) -> str:
    """The HTML an RTF body encapsulates (MS-OXRTFEX): the `{\\*\\htmltag …}` groups and the
    text outside `\\htmlrtf … \\htmlrtf0` (the RTF-only rendering), in order.

    striprtf reads such a body as text but drops the tags (paragraphs run together); this
    gives Outlook's HTML back, which the mail pipeline then sanitises and turns into text.
    """
    out: list[str] = []
    pending = bytearray()
    stack: list[tuple[bool, bool]] = []
    skip, htmlrtf, destination, skip_next = False, False, False, 0

    def emit(text: str) -> None:
        if pending:
            out.append(pending.decode(codec, "replace"))
            pending.clear()
        out.append(text)

    for match in _RTF_TOKEN.finditer(markup):
        word, number, hexbyte, symbol, brace, text = match.groups()
        if brace == "{":
            stack.append((skip, htmlrtf))
        elif brace == "}":
            skip, htmlrtf = stack.pop() if stack else (skip, htmlrtf)
        elif symbol == "*":
            destination = True
            continue
        elif word is not None:
            if (destination and word != "htmltag") or word in _RTF_SKIPPED:
                skip = True
            elif word == "htmlrtf":
                htmlrtf = number != "0"
            elif not (skip or htmlrtf):
                if word in ("par", "line"):
                    emit("\r\n")
                elif word == "tab":
                    emit("\t")
                elif word == "u" and number is not None:
                    emit(chr(int(number) % 0x10000))
                    skip_next = 1
        elif skip_next:
            skip_next -= 1
            if text is not None and len(text) > 1 and not (skip or htmlrtf):
                emit(text[1:])
        elif skip or htmlrtf:
            pass
        elif hexbyte is not None:
            pending.append(int(hexbyte, 16))
        elif symbol is not None:
            emit(symbol if symbol in "\\{}" else {"~": "\u00a0", "_": "-"}.get(symbol, ""))
        elif text is not None:
            emit(text)
        destination = False
    emit("")
    return "".join(out)


def _rtf_codec(markup: str) -> str:
    """The code page the RTF declares (`\\ansicpg936`) as a codec; windows-1252 without one."""
    found = re.search(r"\\ansicpg(\d{1,5})", markup[:4096])
    if found is None:
        return "cp1252"
    codec = codec_for(f"cp{found.group(1)}") or f"cp{found.group(1)}"
    try:
        codecs.lookup(codec)
    except LookupError:
        return "cp1252"
    return codec


def _single(value: object) -> object:
    """tnefparse gives a MAPI string or binary property as a one-item list."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _tnef_name(attachment: object, codepage: str | None) -> str:
    """The long file name, else the short one, read as UTF-8 or the blob's code page."""
    for candidate in (_long_name(attachment), getattr(attachment, "_name", b"")):
        candidate = _single(candidate)
        if isinstance(candidate, bytes):
            candidate = _decoded_name(candidate, codepage)
        if isinstance(candidate, str) and candidate.strip("\x00 "):
            return " ".join(candidate.replace("\x00", "").split())
    return ""


def _long_name(attachment: object) -> object:
    try:
        return attachment.long_filename()  # type: ignore[attr-defined]
    except Exception:  # tnefparse falls back to the short name, decoded as UTF-8
        return None


def _decoded_name(raw: bytes, codepage: str | None) -> str:
    raw = raw.rstrip(b"\x00")
    for codec in ("utf-8", codec_for(codepage) if codepage else None):
        if codec is None:
            continue
        try:
            return raw.decode(codec)
        except (UnicodeDecodeError, LookupError):
            continue
    return ""


def _tnef_text(value: object, codepage: str | None) -> str:
    value = _single(value)
    if isinstance(value, bytes):
        return decode_body(value.rstrip(b"\x00"), codepage)[0]
    return value.rstrip("\x00") if isinstance(value, str) else ""
