"""Taking a mail apart: decoded headers, the body text and HTML, and every other part.

Parsed with the standard library's `compat32` policy, which keeps raw header bytes (8-bit
headers arrive as surrogate escapes) and never raises on damage; everything is decoded here
with the charset rules of `charsets.py`. The tree is walked without recursion, so depth is a
limit we choose (`MAX_DEPTH`), not Python's stack.
"""

from __future__ import annotations

import base64
import email.message
import email.utils
import html
import quopri
import re
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from html.parser import HTMLParser
from urllib.parse import unquote_to_bytes

import nh3

from .charsets import decode_body, decode_header_bytes, decode_labelled
from .containers import SMIME_TYPES, SmimeUnreadable, opaque_content, read_tnef

BODY, ALTERNATIVE, ATTACHED = "body", "alternative", "attached"  # a part's role in the mail
MAX_DEPTH = 200  # deeper mail is a parse_error (100 levels read normally)
MAX_PARTS = 10_000
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"^[ \t\r\n]+$")
_FORBIDDEN_IN_HEADER = re.compile(r"[\x00\r\n]+")
_TYPE_EXTENSIONS = {
    "image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp",
    "application/pdf": "pdf", "text/plain": "txt", "text/html": "html", "text/calendar": "ics",
    "message/rfc822": "eml", "application/zip": "zip", "application/octet-stream": "bin",
    "application/pkcs7-mime": "p7m", "application/pkcs7-signature": "p7s",
    "application/x-pkcs7-signature": "p7s", "application/pgp-signature": "asc",
    "application/pgp-encrypted": "pgp", "text/rfc822-headers": "txt",
    "message/delivery-status": "txt", "message/disposition-notification": "txt",
    "application/ms-tnef": "dat",
}


class MailTooDeep(Exception):
    """More MIME nesting (or parts) than we read: the mail becomes a parse_error message."""


@dataclass
class Part:
    """An attachment: every part that is not body text, with its bytes."""

    filename: str
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


@dataclass
class Body:
    """What a mail says: its text parts in order, its HTML, attachments, and what we noticed."""

    texts: list[str] = field(default_factory=list)
    html: str | None = None
    parts: list[Part] = field(default_factory=list)
    charset: str | None = None
    signed: bool = False
    encrypted: bool = False
    report_type: str | None = None
    report_parts: list[email.message.Message] = field(default_factory=list)
    calendar: bool = False
    damage: str | None = None  # a part we could not read (the mail is kept, flagged parse_error)


def parse_bytes(raw: bytes) -> email.message.Message:
    return BytesParser(policy=policy.compat32).parsebytes(raw)


def unescape(value: str, hint: str | None = None) -> str:
    """8-bit header bytes (surrogate escapes from the parser) read as text."""
    if not any("\udc80" <= c <= "\udcff" for c in value):
        return value
    return decode_header_bytes(value.encode("utf-8", "surrogateescape"), hint)


def clean_header_value(value: str) -> str:
    """No CR, LF or NUL survives into a header value (folding becomes one space), and no
    undecoded byte."""
    return _FORBIDDEN_IN_HEADER.sub(" ", unescape(value)).strip()


def raw_header(message: email.message.Message | None, name: str) -> str | None:
    """A header's value as received (8-bit bytes as surrogate escapes), unfolded lazily.

    compat32's `get` turns 8-bit bytes into replacement characters; `raw_items` keeps them,
    so `decode_header` can read them with the body's charset.
    """
    if message is None:
        return None
    wanted = name.lower()
    for key, value in message.raw_items():
        if key.lower() == wanted:
            return str(value)
    return None


def decode_header(value: str | None, hint: str | None = None) -> str | None:
    """RFC 2047 words (also split inside a character, or in a quoted parameter), 8-bit bytes.

    Adjacent words in one charset are joined as bytes before decoding: mailers split a GBK or
    UTF-8 character across two words. A word in a charset nobody knows stays as written.
    """
    if value is None:
        return None
    value = unescape(value, hint)
    pieces: list[str] = []
    pending: tuple[str, bytearray] | None = None
    position = 0

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            text = decode_labelled(bytes(pending[1]), pending[0])
            pieces.append(text if text is not None else f"=?{pending[0]}?...?=")
            pending = None

    for match in _ENCODED_WORD.finditer(value):
        between = value[position:match.start()]
        if between and not (_BETWEEN_WORDS.match(between) and pending is not None):
            flush()
            pieces.append(between)
        charset, encoding, payload = match.group(1), match.group(2).upper(), match.group(3)
        data = _word_bytes(encoding, payload)
        label = charset.split("*", 1)[0].lower()
        if decode_labelled(b"", label) is None:
            flush()
            pieces.append(match.group(0))  # unknown charset: kept literally
        elif pending is not None and pending[0] == label:
            pending[1].extend(data)
        else:
            flush()
            pending = (label, bytearray(data))
        position = match.end()
    flush()
    pieces.append(value[position:])
    return clean_header_value("".join(pieces))


def _word_bytes(encoding: str, payload: str) -> bytes:
    if encoding == "Q":
        return quopri.decodestring(payload.replace("_", " ").encode("ascii", "replace"),
                                   header=True)
    data = re.sub(r"[^A-Za-z0-9+/]", "", payload)
    data = data[: len(data) - (1 if len(data) % 4 == 1 else 0)]
    return base64.b64decode(data + "=" * (-len(data) % 4))


def content_type(part: email.message.Message) -> str:
    value = (part.get("Content-Type") or "").split(";", 1)[0].strip().lower()
    if "/" not in value:
        return "text/plain"
    return value


def param(part: email.message.Message, name: str, header: str = "content-type",
          hint: str | None = None) -> str | None:
    """A parameter, RFC 2231 continuations and charsets included, RFC 2047 words decoded."""
    try:
        value = part.get_param(name, header=header)
    except Exception:  # a header so broken the library cannot read its parameters
        return None
    if value is None:
        return None
    if isinstance(value, tuple):
        charset, _language, text = value
        data = text.encode("latin-1", "surrogateescape") if isinstance(text, str) else text
        try:
            data = bytes(data)
        except TypeError:
            return None
        data = unquote_to_bytes(data) if b"%" in data else data
        decoded = decode_labelled(data, charset or "utf-8")
        return clean_header_value(decoded if decoded is not None else data.decode(
            "utf-8", "replace"))
    text = email.utils.collapse_rfc2231_value(value) if not isinstance(value, str) else value
    return decode_header(text.strip('"'), hint)


def filename_of(part: email.message.Message, hint: str | None) -> str | None:
    return (param(part, "filename", "content-disposition", hint)
            or param(part, "name", "content-type", hint))


def disposition(part: email.message.Message) -> str:
    return (part.get("Content-Disposition") or "").split(";", 1)[0].strip().lower()


def payload_bytes(part: email.message.Message) -> bytes:
    """The decoded bytes of a leaf part; base64 with broken padding and stray bytes read too."""
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    if isinstance(payload, str):
        return payload.encode("ascii", "surrogateescape")
    return b""


def unflow(text: str, delsp: bool) -> str:
    """RFC 3676 format=flowed: a line ending in a space continues on the next."""
    out: list[str] = []
    current: str | None = None
    current_depth = -1
    for line in text.split("\n"):
        line = line.rstrip("\r")
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]  # space-stuffing
        if current is not None and depth == current_depth:
            current += content
        else:
            if current is not None:
                out.append(">" * current_depth + (" " if current_depth else "") + current)
            current, current_depth = content, depth
        if current.endswith(" ") and content != "-- ":
            if delsp:
                current = current[:-1]
            continue
        out.append(">" * current_depth + (" " if current_depth else "") + current)
        current = None
    if current is not None:
        out.append(">" * current_depth + (" " if current_depth else "") + current)
    return "\n".join(out)


class _TextExtractor(HTMLParser):
    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table",
              "blockquote", "pre", "hr", "section", "article", "ul", "ol"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head", "title"):
            self.skip += 1
        elif tag in self.BLOCKS:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head", "title"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCKS:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)


def html_to_text(markup: str) -> str:
    extractor = _TextExtractor()
    try:
        extractor.feed(markup)
        extractor.close()
    except Exception:
        return html.unescape(re.sub(r"<[^>]*>", " ", markup))
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in "".join(
        extractor.out).split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def sanitize_html(markup: str) -> str:
    """What an agent UI may show: no script, no event handler, no `javascript:` URL."""
    return nh3.clean(markup, url_schemes={"http", "https", "mailto", "cid", "data"})


def leaf_text(part: email.message.Message, hint: str | None) -> tuple[str, str]:
    data = payload_bytes(part)
    kind = content_type(part)
    text, codec = decode_body(data, param(part, "charset"), html=kind == "text/html")
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    if kind == "text/plain" and (param(part, "format") or "").lower() == "flowed":
        text = unflow(text, (param(part, "delsp") or "").lower() == "yes")
    return text, codec


def read_body(root: email.message.Message) -> Body:
    """Walk the tree in order (no recursion): body text, HTML, and every other part kept."""
    body = Body()
    counters: dict[str, int] = {}
    stack: list[tuple[email.message.Message, int, str, str | None]] = [(root, 0, BODY, None)]
    seen = 0
    while stack:
        part, depth, role, parent = stack.pop()
        seen += 1
        if depth > MAX_DEPTH or seen > MAX_PARTS:
            raise MailTooDeep(f"more than {MAX_DEPTH} levels or {MAX_PARTS} parts")
        kind = content_type(part)
        if part.is_multipart() and not kind.startswith("message/"):
            children = [c for c in part.get_payload() if isinstance(c, email.message.Message)]
            _read_multipart(body, part, kind, children, depth, role, stack)
            continue
        if kind in SMIME_TYPES:
            signed = _read_smime(body, part, kind, role, counters)
            if signed is not None:
                stack.append((signed, depth + 1, role, "signed"))
            continue
        _read_leaf(body, part, kind, role, parent, counters)
    return body


def _read_multipart(body: Body, part: email.message.Message, kind: str,
                    children: list[email.message.Message], depth: int, role: str,
                    stack: list[tuple[email.message.Message, int, str, str | None]]) -> None:
    in_body = role == BODY
    subtype = kind.split("/", 1)[1]
    if subtype == "signed":
        body.signed = True
        order = [(c, role if i == 0 else ATTACHED) for i, c in enumerate(children)]
    elif subtype == "encrypted":
        body.encrypted = True
        order = [(c, ATTACHED) for c in children]
    elif subtype == "report":
        body.report_type = (param(part, "report-type") or "").lower() or None
        order = [(c, role if i == 0 else ATTACHED) for i, c in enumerate(children)]
    elif subtype == "alternative" and in_body:
        chosen = _choose_alternative(children)
        order = [(c, BODY if c is chosen else ALTERNATIVE) for c in children]
    else:
        order = [(c, role) for c in children]
    for child, child_role in reversed(order):
        stack.append((child, depth + 1, child_role, subtype))


def _read_smime(body: Body, part: email.message.Message, kind: str, role: str,
                counters: dict[str, int]) -> email.message.Message | None:
    """An S/MIME `smime.p7m`, kept as it came; for opaque `signed-data` (or RFC 3274
    `compressed-data`) in the body, the MIME entity it carries, to be read as the body (its
    text and attachments).

    The `smime-type` parameter is a hint (some clients leave it out): the structure decides.
    A blob that cannot be read is kept and named in `damage`, never a lost mail.
    """
    data = payload_bytes(part)
    _keep(body, part, kind, data, filename_of(part, body.charset), counters)
    declared = (param(part, "smime-type") or "").lower()
    try:
        wrapping, content = opaque_content(data)
    except SmimeUnreadable as exc:
        if declared not in ("", "signed-data", "compressed-data"):
            body.encrypted = True  # enveloped-data is not ours to read
            return None
        body.signed = body.signed or declared == "signed-data"
        body.damage = body.damage or f"smime_unreadable: {exc}"
        return None
    if content is None:
        body.encrypted = True
        return None
    body.signed = body.signed or wrapping == "signed"
    if role != BODY:
        return None  # a signed file attached to a mail: kept, not read as the body
    return parse_bytes(content)


def _choose_alternative(children: list[email.message.Message]) -> email.message.Message | None:
    """The plain part unless it is empty; else the HTML (or a nested multipart)."""
    plain = next((c for c in children if content_type(c) == "text/plain"
                  and disposition(c) != "attachment"), None)
    if plain is not None and payload_bytes(plain).strip():
        return plain
    rich = next((c for c in reversed(children) if content_type(c) == "text/html"
                 or c.is_multipart()), None)
    return rich or plain or (children[0] if children else None)


def _read_leaf(body: Body, part: email.message.Message, kind: str, role: str,
               parent: str | None, counters: dict[str, int]) -> None:
    hint = body.charset
    name = filename_of(part, hint)
    attached = disposition(part) == "attachment" or (name is not None and kind not in (
        "text/plain", "text/html"))
    if kind.startswith("message/"):
        # compat32 parses message/* into sub-messages: kept as their bytes (a `.eml`).
        payload = part.get_payload()
        data = (b"".join(c.as_bytes() for c in payload if isinstance(c, email.message.Message))
                if isinstance(payload, list) else payload_bytes(part))
        if parent == "report":
            body.report_parts.append(part)
        _keep(body, part, kind, data, name, counters)
        return
    if role == ALTERNATIVE and not attached and kind in ("text/plain", "text/html"):
        if kind == "text/html":  # the rich version of the text we read: kept as `html`
            text, _codec = leaf_text(part, hint)
            body.html = sanitize_html(text) if body.html is None else body.html
        return
    in_body = role == BODY
    if kind == "text/calendar":
        body.calendar = True
        _keep(body, part, kind, payload_bytes(part), name, counters)
        return
    if in_body and not attached and kind in ("text/plain", "text/html"):
        text, codec = leaf_text(part, hint)
        if body.charset is None and codec not in ("ascii",):
            body.charset = codec
        if kind == "text/html":
            if body.html is None:
                body.html = sanitize_html(text)
            else:
                body.html += sanitize_html(text)
            if parent != "related" or not body.texts:
                body.texts.append(html_to_text(text))
        else:
            body.texts.append(text)
        return
    if parent == "report" and kind == "text/rfc822-headers":
        body.report_parts.append(part)
    data = payload_bytes(part)
    _keep(body, part, kind, data, name, counters)
    if kind == "application/ms-tnef" or (name or "").lower() == "winmail.dat":
        _expand_tnef(body, data)


def _expand_tnef(body: Body, data: bytes) -> None:
    """Outlook's `winmail.dat` (TNEF): its files become attachments beside it (kept too).

    Exchange wraps a rich-text mail's attachments into one TNEF blob that no other client
    opens; without this, the agent sees `winmail.dat` and not the customer's invoice. Its body
    (plain, HTML, or compressed RTF) fills `text` only when the mail had none, and `html` too
    when it was HTML. A blob tnefparse cannot read stays the one `.dat` it was.
    """
    contents = read_tnef(data)
    if contents is None:
        return
    for name, kind, payload in contents.files:
        body.parts.append(Part(filename=clean_header_value(name) or name, content_type=kind,
                               data=payload))
    if any(text.strip() for text in body.texts):
        return
    if contents.text.strip():
        body.texts.append(contents.text)
    elif contents.html is not None:
        body.texts.append(html_to_text(contents.html))
        body.html = body.html if body.html is not None else sanitize_html(contents.html)


def _keep(body: Body, part: email.message.Message, kind: str, data: bytes, name: str | None,
          counters: dict[str, int]) -> None:
    if not name:
        major = kind.split("/", 1)[0] if kind.split("/", 1)[0] in (
            "image", "audio", "video", "text", "message") else "attachment"
        counters[major] = counters.get(major, 0) + 1
        extension = _TYPE_EXTENSIONS.get(kind, "bin")
        name = f"{major}-{counters[major]}.{extension}"
    content_id = part.get("Content-ID")
    cid = clean_header_value(str(content_id)).strip("<>") if content_id else None
    inline = disposition(part) == "inline" or (cid is not None and disposition(
        part) != "attachment")
    body.parts.append(Part(filename=name, content_type=kind, data=data, content_id=cid or None,
                           inline=inline))
