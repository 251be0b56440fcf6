"""Web form submissions (JSON, urlencoded, multipart) through the real aiohttp handler."""

from __future__ import annotations

import json
import os
import urllib.parse
from typing import Any

from hypothesis import strategies as st

from connectors.webform.channel import CHANNEL
from intake.message import Message
from intake.settings import REPO_ROOT
from intake.testing import RecordingPublisher, connector_client

from .edge import Edge
from .harness import Target, hostile_text

CONFIG = REPO_ROOT / "deploy" / "intake.example.yaml"
FIELDS = ("name", "email", "phone", "topic", "subject", "message", "attachment", "consent",
          "website", "_token", "fields")
VALID = {"name": "Li Wei", "email": "li.wei@example.cn", "topic": "complaint",
         "message": "我的订单还没有到", "consent": True}
publisher = RecordingPublisher()


async def _start() -> Any:
    # Every fuzzed request comes from 127.0.0.1: the rate limiter would answer 429 to nearly all.
    saved = {k: os.environ.get(k) for k in ("INTAKE_WEBFORM_RATE_LIMIT_PER_MINUTE",
                                            "INTAKE_WEBFORM_RATE_LIMIT_BURST")}
    os.environ.update({k: "100000000" for k in saved})
    try:
        return await connector_client(CHANNEL, CONFIG, publisher)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


EDGE = Edge(_start)

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                    blacklist_characters="\x7f"), max_size=40)
headers = st.fixed_dictionaries({}, optional={
    "Accept": st.sampled_from(["application/json", "text/html", "*/*",
                               "text/html,application/xhtml+xml;q=0.9", ""]),
    "Idempotency-Key": header_text,
    "X-Forwarded-For": st.sampled_from(["1.2.3.4", "1.2.3.4, 10.0.0.1", ",", "garbage"]),
    "User-Agent": header_text,
})
# Mostly the real form, so that inputs reach the parsers; now and then one that does not exist.
form_ids = st.integers(0, 9).map(lambda i: ("missing", "CONTACT", "a" * 70)[i] if i < 3
                                 else "contact")
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                         hostile_text(), st.sampled_from(list(VALID.values())))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(hostile_text(10), inner, max_size=4)),
    max_leaves=12)
field_names = st.one_of(st.sampled_from(FIELDS), hostile_text(12))


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["mutated", "random", "bytes", "raw"]))
    if kind == "mutated":
        data: dict[str, Any] = dict(VALID)
        for name in draw(st.lists(field_names, max_size=4)):
            if draw(st.booleans()):
                data.pop(name, None)
            else:
                data[name] = draw(json_values)
        if draw(st.booleans()):
            data = {"fields": data}
        return json.dumps(data, ensure_ascii=draw(st.booleans())).encode()
    if kind == "random":
        return json.dumps(draw(json_values)).encode()
    if kind == "raw":  # what json.dumps never writes: huge numbers, deep nesting, duplicates
        return draw(st.sampled_from([
            b'{"name": 1e999999, "email": "a@b.cn"}', b'{"name": ' + b"9" * 5000 + b"}",
            b"[" * 5000 + b"]" * 5000, b'{"a":' * 2000 + b"1" + b"}" * 2000,
            b'{"name": "a", "name": "b", "email": "x@y.cn", "email": "z@y.cn"}',
            b'{"name": "\\ud800", "email": "\\u0000@x.cn"}', b"\xef\xbb\xbf{}", b"",
            b'{"name": NaN, "consent": Infinity}', b"\x00\x01\x02", b'"just a string"']))
    return draw(st.binary(max_size=200))


@st.composite
def urlencoded_bodies(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    pairs = [(k, "true" if v is True else v) for k, v in VALID.items()]
    pairs += draw(st.lists(st.tuples(field_names, hostile_text()), max_size=6))
    return urllib.parse.urlencode(pairs).encode() + draw(st.sampled_from(
        [b"", b"&", b"&&=&", b"%", b"%zz", b"&name=%ff%fe", b"&=", b"&a=b=c", b"&%00=%00"]))


FILENAMES = ("../../etc/passwd", "..\\..\\windows\\win.ini", "/etc/shadow", "a\x00.pdf",
             "inv\u202efdp.exe", "x" * 5000 + ".pdf", "CON", ".htaccess", "", " ", "a\r\nb.pdf",
             "%2e%2e%2fpasswd", "name\".pdf", "ok.pdf", "中文.png", "\x1b[31mred.pdf")
boundary_chars = st.sampled_from("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                 "'()+_,-./:=? ")


def _quoted(value: str) -> bytes:
    return ('"' + value + '"').encode("utf-8", "surrogatepass")


@st.composite
def multipart_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    boundary = draw(st.text(boundary_chars, min_size=1, max_size=70)).strip() or "b"
    parts: list[bytes] = []
    values = [(k, "on" if v is True else str(v)) for k, v in VALID.items()]
    values += draw(st.lists(st.tuples(field_names, hostile_text()), max_size=3))
    for name, value in values:
        parts.append(b'Content-Disposition: form-data; name=' + _quoted(name) + b"\r\n\r\n"
                     + value.encode("utf-8", "surrogatepass"))
    for _ in range(draw(st.integers(0, 3))):
        filename = draw(st.one_of(st.sampled_from(FILENAMES), hostile_text(40)))
        disposition = b'Content-Disposition: form-data; name="attachment"; filename=' + _quoted(
            filename)
        if draw(st.booleans()):
            disposition += b"; filename*=UTF-8''" + urllib.parse.quote(
                filename, safe="").encode()
        content_type = draw(st.sampled_from([b"application/pdf", b"image/png", b"text/html",
                                             b"", b"x" * 300, b"image/png; charset=\x01",
                                             b"application/x-msdownload"]))
        extra = draw(st.sampled_from([b"", b"Content-Transfer-Encoding: base64\r\n",
                                      b"Content-Length: 999999\r\n", b"X: \x00\r\n"]))
        parts.append(disposition + b"\r\nContent-Type: " + content_type + b"\r\n" + extra
                     + b"\r\n" + draw(st.binary(max_size=300)))
    delimiter = b"--" + boundary.encode()
    body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts) + delimiter + b"--\r\n"
    mangle = draw(st.sampled_from(["none", "none", "truncate", "no_close", "junk", "other"]))
    if mangle == "truncate":
        body = body[:draw(st.integers(0, len(body)))]
    elif mangle == "no_close":
        body = body[:-4]
    elif mangle == "junk":
        body = draw(st.binary(max_size=100)) + body
    elif mangle == "other":
        boundary = boundary + "x"
    quoted = f'"{boundary}"' if draw(st.booleans()) else boundary
    return f"multipart/form-data; boundary={quoted}", body


def _submit(form_id: str, content_type: str, body: bytes, extra: dict[str, str]) -> None:
    before = len(publisher.messages)
    status, _, answer = EDGE.request("POST", f"/forms/{form_id}/submissions",
                                     headers={**extra, "Content-Type": content_type}, data=body)
    if status in (201, 303):
        assert len(publisher.messages) == before + 1, (status, answer[:200])
        message = publisher.messages[-1]
        Message.model_validate_json(message.model_dump_json())
        for attachment in message.attachments:
            assert "/" not in attachment.filename and "\\" not in attachment.filename
            assert "\x00" not in attachment.filename and "\x00" not in (
                attachment.original_filename or "")
    else:
        assert len(publisher.messages) == before, (status, answer[:200])
    del publisher.messages[:]


def check_json(value: tuple[str, bytes, dict[str, str]]) -> None:
    form_id, body, extra = value
    _submit(form_id, "application/json", body, extra)


def check_urlencoded(value: tuple[str, bytes, dict[str, str]]) -> None:
    form_id, body, extra = value
    _submit(form_id, "application/x-www-form-urlencoded", body, extra)


def check_multipart(value: tuple[str, tuple[str, bytes], dict[str, str]]) -> None:
    form_id, (content_type, body), extra = value
    _submit(form_id, content_type, body, extra)


def check_any_type(value: tuple[str, str, bytes, dict[str, str]]) -> None:
    form_id, content_type, body, extra = value
    _submit(form_id, content_type, body, extra)


content_types = st.one_of(st.sampled_from([
    "text/plain", "application/json; charset=latin-1", "multipart/form-data",
    "multipart/mixed; boundary=x", "application/x-www-form-urlencoded; charset=gbk",
    "application/xml", "", "*/*", "application/json; boundary=x"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30))


def targets() -> list[Target]:
    return [
        Target("webform_json", st.tuples(form_ids, json_bodies(), headers), check_json),
        Target("webform_urlencoded", st.tuples(form_ids, urlencoded_bodies(), headers),
               check_urlencoded),
        Target("webform_multipart", st.tuples(form_ids, multipart_requests(), headers),
               check_multipart),
        Target("webform_content_types",
               st.tuples(form_ids, content_types, st.binary(max_size=100), headers),
               check_any_type, scale=0.2),
    ]
