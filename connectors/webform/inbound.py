"""The web form's HTTP edge: hosted pages, QR codes, embeds, schema, and submissions."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import math
import re
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import orjson
import segno
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from intake import (
    ACCOUNTS,
    BLOBS,
    ERRORS,
    HANDLER_SECONDS,
    MESSAGES_IN,
    PUBLISHER,
    SERVICE_SETTINGS,
    Attachment,
    IntakeError,
    RateLimiter,
    Rejected,
    Transient,
    clean_original_filename,
    client_address,
    digest_of,
    error_response,
    get_logger,
    utcnow,
)

from .errors import (
    BodyMalformed,
    FormUnknown,
    IdempotencyKeyInvalid,
    MediaTypeUnsupported,
    PayloadTooLarge,
    RateLimited,
    SubmissionInvalid,
)
from .normalize import (
    REFERENCE,
    Upload,
    clean_fields,
    content_digest,
    idempotency_key,
    reference_for,
    to_message,
)
from .openapi import OPENAPI_PATH, build_openapi
from .settings import HONEYPOT_FIELD, TOKEN_FIELD, FormDefinition, WebformAccounts, WebformSettings

HERE = Path(__file__).resolve().parent
STATIC = {"form.css": "text/css", "form.js": "text/javascript"}
CHUNK = 64 * 1024
_HEADER_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
_TOKEN = re.compile(r"^[0-9a-f]{32}$")
_CONTENT_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+$")
log = get_logger(service="webform")
# Per-submission metrics, looked up once (a `labels()` call takes a lock and builds a key).
_SUBMISSION_SECONDS = HANDLER_SECONDS.labels("webform", "submission")
_RECEIVED = MESSAGES_IN.labels("webform", "webform")

UI = {
    "en": {
        "required": "(required)", "optional": "(optional)", "error_title": "There is a problem",
        "error_prefix": "Error:", "submit": "Send", "choose": "Choose…",
        "honeypot": "Leave this field empty", "thanks_title": "Thank you",
        "reference_label": "Your reference",
        "reference_hint": "Quote this reference if you contact us about this message.",
        "again": "Send another message", "files_again": "Please choose your files again.",
        "unavailable": "We could not save your message just now. Please try again in a minute.",
        "back": "Back to the form",
    },
    "zh": {
        "required": "（必填）", "optional": "（选填）", "error_title": "提交内容有误",
        "error_prefix": "错误：", "submit": "提交", "choose": "请选择…",
        "honeypot": "请勿填写此项", "thanks_title": "感谢您的留言",
        "reference_label": "您的参考编号",
        "reference_hint": "如就此留言联系我们，请提供此编号。",
        "again": "再提交一条留言", "files_again": "请重新选择要上传的文件。",
        "unavailable": "暂时无法保存您的留言，请稍后再试。", "back": "返回表单",
    },
}

# The form page runs no script of another origin and may be framed anywhere (embeds).
HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; base-uri 'none'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class Parsed:
    """A submission body taken apart: values by name, files, and what went over a limit."""

    values: dict[str, list[Any]] = field(default_factory=dict)
    uploads: list[Upload] = field(default_factory=list)
    raw: bytes | None = None
    oversize: dict[str, str] = field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def templates() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined)


def form_url(settings: WebformSettings, form: FormDefinition) -> str:
    return f"{settings.public_url}/forms/{form.id}"


@functools.lru_cache(maxsize=64)
def render_qr(url: str, kind: str) -> bytes:
    """The QR code of `url` as SVG or PNG (error correction M, quiet zone of 4 modules)."""
    buffer = io.BytesIO()
    qr = segno.make(url, error="m", micro=False)
    if kind == "svg":
        qr.save(buffer, kind="svg", scale=8, border=4, xmldecl=True, svgns=True)
    else:
        qr.save(buffer, kind="png", scale=10, border=4)
    return buffer.getvalue()


def _ui(form: FormDefinition) -> dict[str, str]:
    return UI.get(form.lang.split("-")[0].lower(), UI["en"])


def _luminance(hex_colour: str) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def theme_text_colour(theme: str) -> str:
    """White or near-black, whichever reads better on the theme colour (WCAG contrast)."""
    lum = _luminance(theme)
    white = 1.05 / (lum + 0.05)
    dark = (lum + 0.05) / (_luminance("#111111") + 0.05)
    return "#ffffff" if white >= dark else "#111111"


def render_form(form: FormDefinition, *, token: str, values: dict[str, Any] | None = None,
                errors: dict[str, str] | None = None, notice: str | None = None) -> str:
    errors = errors or {}
    ui = _ui(form)
    known = {f.name for f in form.fields}
    summary = [{"href": f"#f-{name}" if name in known else None, "message": message,
                "label": form.field(name).label if name in known else name}  # type: ignore[union-attr]
               for name, message in errors.items()]
    return templates().get_template("form.html").render(
        form=form, ui=ui, token=token, values=values or {}, errors=errors, summary=summary,
        notice=notice, theme_text=theme_text_colour(form.theme_color),
        action=f"/forms/{form.id}/submissions", honeypot=HONEYPOT_FIELD, token_field=TOKEN_FIELD)


def _html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers={**HTML_HEADERS, **(headers or {})})


def _wants_html(request: web.Request) -> bool:
    return ("text/html" in request.headers.get("Accept", "")
            and request.content_type != "application/json")


def client_ip(request: web.Request, settings: WebformSettings) -> str:
    return client_address(request.remote, request.headers,
                          trust_forwarded_for=settings.trust_forwarded_for)


def _error_json(exc: IntakeError, status: int, fields: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> web.Response:
    # The kernel's one error shape: `fields` is always present, empty when nothing is at fault.
    return error_response(status, exc.reason, str(exc), fields, headers)


async def _read_limited(request: web.Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request is over {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_urlencoded(body: bytes) -> Parsed:
    try:
        text = body.decode("utf-8")
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=False,
                                       errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise BodyMalformed("The form body is not valid UTF-8 urlencoded data.") from exc
    parsed = Parsed(raw=body)
    for name, value in pairs:
        parsed.values.setdefault(name, []).append(value)
    return parsed


def _parse_json(body: bytes) -> Parsed:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyMalformed(f"The body is not valid JSON: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("fields"), dict) and len(data) == 1:
        data = data["fields"]
    if not isinstance(data, dict):
        raise BodyMalformed('Send an object: {"fields": {"name": "value", ...}}.')
    parsed = Parsed(raw=body)
    for name, value in data.items():
        if isinstance(value, dict | list):
            parsed.values[name] = [object()]  # refused by validation as "expected text"
        else:
            parsed.values[name] = [value]
    return parsed


async def _parse_multipart(request: web.Request, settings: WebformSettings) -> Parsed:
    parsed = Parsed()
    total = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise BodyMalformed("Nested multipart bodies are not accepted.")
            data = bytearray()
            is_file = part.filename is not None
            limit = settings.max_file_bytes if is_file else settings.max_field_chars * 4
            over = False
            while chunk := await part.read_chunk(CHUNK):
                total += len(chunk)
                if total > settings.max_body_bytes:
                    raise PayloadTooLarge(f"The request is over {settings.max_body_bytes} bytes.")
                if len(data) + len(chunk) > limit:
                    over = True  # keep reading (bounded by max_body_bytes) to answer properly
                else:
                    data.extend(chunk)
            name = part.name or ""
            if not is_file:
                if over:
                    parsed.oversize[name] = (f"Use at most {settings.max_field_chars} "
                                             "characters.")
                    continue
                charset = part.get_charset(default="utf-8")
                try:
                    parsed.values.setdefault(name, []).append(bytes(data).decode(charset))
                except (UnicodeDecodeError, LookupError) as exc:
                    raise BodyMalformed(f"Field {name!r} is not valid {charset}.") from exc
                continue
            if part.filename == "" and not data:
                continue  # a file input left empty: browsers still send the part
            if over:
                parsed.oversize[name] = (f"{clean_original_filename(part.filename or '')} is "
                                         f"over the limit of {_size(settings.max_file_bytes)}.")
                continue
            content_type = (part.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            parsed.uploads.append(Upload(
                field=name, original_filename=part.filename or "",
                content_type=content_type if _CONTENT_TYPE.match(content_type)
                else "application/octet-stream",
                data=bytes(data)))
    except (ValueError, AssertionError, BadHttpMessage) as exc:
        raise BodyMalformed(f"The multipart body is malformed: {exc}") from exc
    return parsed


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:g} MiB" if n >= 1024 * 1024 else f"{n / 1024:g} KiB"


def _raw_of_multipart(parsed: Parsed, upload_refs: list[str]) -> bytes:
    """Multipart bodies are not kept as sent: a JSON account of values and stored files."""
    return orjson.dumps({
        "content_type": "multipart/form-data",
        "fields": {name: [str(v) for v in values] for name, values in parsed.values.items()},
        "files": [{"field": u.field, "filename": u.original_filename,
                   "content_type": u.content_type, "size": len(u.data),
                   "sha256": digest_of(ref)}
                  for u, ref in zip(parsed.uploads, upload_refs, strict=True)],
    }, option=orjson.OPT_INDENT_2)


def _form_values(parsed: Parsed) -> dict[str, Any]:
    """Submitted values as the re-rendered page shows them."""
    shown: dict[str, Any] = {}
    for name, values in parsed.values.items():
        value = values[-1] if values else ""
        shown[name] = value if isinstance(value, str | bool | int | float) else ""
    return shown


class WebformHandlers:
    """The request handlers; the rate limiter lives here, one per built app."""

    def __init__(self) -> None:
        self.limiter: RateLimiter | None = None
        self.openapi_body: bytes | None = None

    @staticmethod
    def _form(request: web.Request) -> FormDefinition:
        accounts: WebformAccounts = request.app[ACCOUNTS]  # type: ignore[assignment]
        form = accounts.form(request.match_info["form_id"])
        if form is None:
            raise FormUnknown(f"There is no form {request.match_info['form_id']!r}.")
        return form

    @staticmethod
    def _settings(request: web.Request) -> WebformSettings:
        return request.app[SERVICE_SETTINGS]  # type: ignore[return-value]

    def _not_found(self, request: web.Request, exc: FormUnknown) -> web.Response:
        if "text/html" in request.headers.get("Accept", ""):
            body = templates().get_template("error.html").render(
                lang="en", title="Form not found", message=str(exc), back=None, theme="#1d4ed8",
                theme_text="#ffffff")
            return _html(body, status=404)
        return _error_json(exc, 404)

    async def openapi(self, request: web.Request) -> web.Response:
        if self.openapi_body is None:  # settings and forms are frozen for the app's life
            accounts: WebformAccounts = request.app[ACCOUNTS]  # type: ignore[assignment]
            self.openapi_body = orjson.dumps(build_openapi(self._settings(request), accounts))
        return web.Response(body=self.openapi_body, content_type="application/json")

    async def page(self, request: web.Request) -> web.Response:
        try:
            form = self._form(request)
        except FormUnknown as exc:
            return self._not_found(request, exc)
        return _html(render_form(form, token=uuid.uuid4().hex))

    async def thanks(self, request: web.Request) -> web.Response:
        try:
            form = self._form(request)
        except FormUnknown as exc:
            return self._not_found(request, exc)
        reference = request.query.get("ref", "")
        if not REFERENCE.match(reference):
            raise web.HTTPSeeOther(f"/forms/{form.id}")
        body = templates().get_template("confirmation.html").render(
            form=form, ui=_ui(form), reference=reference,
            theme_text=theme_text_colour(form.theme_color))
        return _html(body)

    async def schema(self, request: web.Request) -> web.Response:
        try:
            form = self._form(request)
        except FormUnknown as exc:
            return _error_json(exc, 404)
        settings = self._settings(request)
        fields = []
        for f in form.fields:
            entry: dict[str, Any] = {"name": f.name, "type": f.type, "label": f.label,
                                     "required": f.required}
            if f.options is not None:
                entry["options"] = [o.model_dump() for o in f.options]
            for key in ("placeholder", "help", "max_length", "pattern", "accept"):
                if getattr(f, key) is not None:
                    entry[key] = getattr(f, key)
            if f.type == "file":
                entry["multiple"] = f.multiple
            fields.append(entry)
        body = {"id": form.id, "title": form.title, "description": form.description,
                "theme_color": form.theme_color, "lang": form.lang,
                "submit_url": f"{form_url(settings, form)}/submissions",
                "max_file_bytes": settings.max_file_bytes, "max_files": settings.max_files,
                "fields": fields}
        return web.json_response(body, headers={"Access-Control-Allow-Origin": "*"})

    async def qr_svg(self, request: web.Request) -> web.Response:
        return await self._qr(request, "svg", "image/svg+xml")

    async def qr_png(self, request: web.Request) -> web.Response:
        return await self._qr(request, "png", "image/png")

    async def _qr(self, request: web.Request, kind: str, content_type: str) -> web.Response:
        try:
            form = self._form(request)
        except FormUnknown as exc:
            return _error_json(exc, 404)
        url = form_url(self._settings(request), form)
        body = await asyncio.to_thread(render_qr, url, kind)
        return web.Response(body=body, content_type=content_type,
                            headers={"Cache-Control": "public, max-age=3600",
                                     "Content-Disposition": f'inline; filename="{form.id}.{kind}"'})

    async def embed_js(self, request: web.Request) -> web.Response:
        try:
            form = self._form(request)
        except FormUnknown as exc:
            return _error_json(exc, 404)
        settings = self._settings(request)
        script = templates().get_template("embed.js").render(
            src=_js(form_url(settings, form)), origin=_js(settings.public_url),
            title=_js(form.title))
        return web.Response(text=script, content_type="text/javascript", charset="utf-8",
                            headers={"Cache-Control": "public, max-age=300",
                                     "Access-Control-Allow-Origin": "*"})

    async def embed_snippet(self, request: web.Request) -> web.Response:
        try:
            form = self._form(request)
        except FormUnknown as exc:
            return _error_json(exc, 404)
        settings = self._settings(request)
        snippet = templates().get_template("embed.html").render(
            src=form_url(settings, form), title=form.title)
        return web.Response(text=snippet, content_type="text/plain", charset="utf-8")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=(HERE / "static" / name).read_bytes(),
                            content_type=STATIC[name], charset="utf-8",
                            headers={"Cache-Control": "public, max-age=3600"})

    async def submit(self, request: web.Request) -> web.Response:
        """Validate, store files and raw body, publish durably, then answer."""
        started = time.perf_counter()
        try:
            return await self._submit(request)
        finally:
            _SUBMISSION_SECONDS.observe(
                time.perf_counter() - started)

    async def _submit(self, request: web.Request) -> web.Response:
        settings = self._settings(request)
        html = _wants_html(request)
        form: FormDefinition | None = None
        parsed: Parsed | None = None
        try:
            form = self._form(request)
            self._limit(request, settings)
            parsed = await self._parse(request, settings)
            return await self._accept(request, settings, form, parsed, html)
        except FormUnknown as exc:
            ERRORS.labels("webform", exc.reason).inc()
            return self._not_found(request, exc)
        except (SubmissionInvalid, PayloadTooLarge) as exc:
            assert form is not None
            ERRORS.labels("webform", exc.reason).inc()
            status = exc.status
            log.info("submission_refused", form=form.id, reason=exc.reason,
                     fields=sorted(exc.fields))
            if html and parsed is not None:
                token = str((parsed.values.get(TOKEN_FIELD) or [""])[-1])
                # A browser cannot be handed its files back: ask for them again.
                notice = (_ui(form)["files_again"] if parsed.uploads or parsed.oversize
                          else None)
                return _html(render_form(
                    form, token=token if _TOKEN.match(token) else uuid.uuid4().hex,
                    values=_form_values(parsed), errors=exc.fields or {"_": str(exc)},
                    notice=notice), status=status)
            if html:
                return self._error_page(form, str(exc), status)
            return _error_json(exc, status, exc.fields)
        except RateLimited as exc:
            ERRORS.labels("webform", exc.reason).inc()
            headers = {"Retry-After": str(exc.retry_after_s)}
            if html and form is not None:
                return self._error_page(form, str(exc), 429, headers)
            return _error_json(exc, 429, headers=headers)
        except Transient as exc:
            assert form is not None
            headers = {"Retry-After": str(settings.retry_after_s)}
            ERRORS.labels("webform", exc.reason).inc()
            log.warning("submission_deferred", form=form.id, reason=exc.reason, error=str(exc))
            if html and parsed is not None:
                return _html(render_form(
                    form, token=str((parsed.values.get(TOKEN_FIELD) or [""])[-1]),
                    values=_form_values(parsed), notice=_ui(form)["unavailable"]),
                    status=503, headers=headers)
            return _error_json(Transient("The message could not be stored; retry shortly.",
                                         reason="unavailable"), 503, headers=headers)
        except Rejected as exc:
            ERRORS.labels("webform", exc.reason).inc()
            status = getattr(exc, "status", 400)
            if html and form is not None:
                return self._error_page(form, str(exc), status)
            return _error_json(exc, status)

    def _error_page(self, form: FormDefinition, message: str, status: int,
                    headers: dict[str, str] | None = None) -> web.Response:
        body = templates().get_template("error.html").render(
            lang=form.lang, title=_ui(form)["error_title"], message=message,
            back=f"/forms/{form.id}", back_label=_ui(form)["back"], theme=form.theme_color,
            theme_text=theme_text_colour(form.theme_color))
        return _html(body, status=status, headers=headers)

    def _limit(self, request: web.Request, settings: WebformSettings) -> None:
        if self.limiter is None:
            self.limiter = RateLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst,
                                       settings.rate_limit_table_size)
        wait = self.limiter.take(client_ip(request, settings))
        if wait > 0:
            raise RateLimited(max(1, math.ceil(wait)))

    @staticmethod
    async def _parse(request: web.Request, settings: WebformSettings) -> Parsed:
        length = request.content_length
        if length is not None and length > settings.max_body_bytes:
            raise PayloadTooLarge(f"The request is over {settings.max_body_bytes} bytes.")
        content_type = request.content_type
        if content_type == "multipart/form-data":
            return await _parse_multipart(request, settings)
        if content_type == "application/x-www-form-urlencoded":
            return _parse_urlencoded(await _read_limited(request, settings.max_body_bytes))
        if content_type == "application/json":
            return _parse_json(await _read_limited(request, settings.max_body_bytes))
        raise MediaTypeUnsupported(
            "Send application/x-www-form-urlencoded, multipart/form-data or application/json.")

    async def _accept(self, request: web.Request, settings: WebformSettings,
                      form: FormDefinition, parsed: Parsed, html: bool) -> web.Response:
        values = dict(parsed.values)
        honeypot = values.pop(HONEYPOT_FIELD, [])
        token = str((values.pop(TOKEN_FIELD, None) or [""])[-1])
        if parsed.oversize:
            raise PayloadTooLarge("A file or field is over its size limit.",
                                  fields=dict(parsed.oversize))
        clean = clean_fields(form, values, parsed.uploads,
                             max_field_chars=settings.max_field_chars,
                             max_files=settings.max_files)
        flags = ["spam_suspect"] if any(str(v).strip() for v in honeypot) else []

        header = request.headers.get("Idempotency-Key")
        if header is not None:
            if not _HEADER_KEY.match(header):
                raise IdempotencyKeyInvalid("Idempotency-Key must be 1 to 200 printable "
                                            "ASCII characters without spaces.")
            external = header
        elif _TOKEN.match(token):
            # One rendered page is one message, but an edited resubmission is another.
            external = f"{token}-{content_digest(clean, parsed.uploads)[:16]}"
        else:
            external = uuid.uuid4().hex
        key = idempotency_key(form.id, external)
        reference = reference_for(key)

        # Blobs first, the message after: a blob failure is answered (503) before anything is
        # published, so a client's retry is the only copy, whatever its key. The store hashes
        # each blob once, on its writer thread, and names it.
        blobs = request.app[BLOBS]
        try:
            if parsed.raw is not None:  # no uploads: one commit for the raw body
                upload_refs: list[str] = []
                raw_ref = await blobs.put(parsed.raw)
            else:  # the multipart account names its files, so they are stored first
                upload_refs = list(await asyncio.gather(
                    *(blobs.put(upload.data) for upload in parsed.uploads)))
                raw_ref = await blobs.put(_raw_of_multipart(parsed, upload_refs))
        except OSError as exc:
            raise Transient(f"blob store: {exc}", reason="blob_store_unavailable") from exc
        attachments = [Attachment(
            filename=upload.filename,
            original_filename=clean_original_filename(upload.original_filename),
            content_type=upload.content_type, size=len(upload.data),
            sha256=digest_of(ref), blob=ref)
            for upload, ref in zip(parsed.uploads, upload_refs, strict=True)]
        fields = {name: ([a.filename for a, u in zip(attachments, parsed.uploads, strict=True)
                          if u.field == name] if isinstance(value, list) else value)
                  for name, value in clean.items()}
        message = to_message(
            form, fields, message_id=uuid.uuid4(), idempotency_key=key, reference=reference,
            received_at=utcnow(), trace_id=uuid.uuid4().hex, attachments=attachments,
            raw=raw_ref, flags=flags, client_ip=client_ip(request, settings),
            user_agent=request.headers.get("User-Agent"))
        await request.app[PUBLISHER].publish(message)
        _RECEIVED.inc()
        log.info("submission_received", form=form.id, idempotency_key=key, reference=reference,
                 trace_id=message.trace_id, flags=flags, attachments=len(attachments))
        if html:
            raise web.HTTPSeeOther(f"/forms/{form.id}/thanks?ref={reference}")
        return web.json_response({"id": str(message.id), "reference": reference,
                                  "idempotency_key": key, "status": "received"},
                                 status=201, dumps=_json_text)


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _js(value: str) -> str:
    """A JSON string literal that is also safe inside an HTML script element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")


def routes() -> list[web.RouteDef]:
    """The web form's routes; each built app gets its own handlers (and rate limiter)."""
    handlers = WebformHandlers()
    table: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
        # Before /forms/{form_id}: aiohttp tries routes in the order they were added.
        ("GET", OPENAPI_PATH, handlers.openapi),
        ("GET", "/forms/{form_id}", handlers.page),
        ("GET", "/forms/{form_id}/thanks", handlers.thanks),
        ("GET", "/forms/{form_id}/schema", handlers.schema),
        ("GET", "/forms/{form_id}/qr.svg", handlers.qr_svg),
        ("GET", "/forms/{form_id}/qr.png", handlers.qr_png),
        ("GET", "/forms/{form_id}/embed.js", handlers.embed_js),
        ("GET", "/forms/{form_id}/embed", handlers.embed_snippet),
        ("GET", "/static/webform/{name}", handlers.static),
        ("POST", "/forms/{form_id}/submissions", handlers.submit),
    ]
    return [web.route(method, path, handler) for method, path, handler in table]
