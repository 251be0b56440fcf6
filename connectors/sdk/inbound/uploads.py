"""Uploads: one file per request, read in chunks up to the app's cap, typed by its content.

The type is sniffed from the bytes (`filetype`; UTF-8 text without NUL is `text/plain`),
whatever the declared type or extension: an `.exe` named `photo.png` is refused (415), a PNG
declared JPEG is stored as `image/png`. The name is cleaned by the kernel. The bytes go to the
blob store; the upload belongs to its uploader (`sdk:upload`), who may attach it to a ticket or
message; another user naming it gets `invalid_attachment` as for an unknown one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import filetype
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from intake import (
    BLOBS,
    Attachment,
    BlobTooLarge,
    clean_original_filename,
    digest_of,
    sanitize_filename,
)

from ..errors import BodyMalformed, Invalid, MediaTypeUnsupported, PayloadTooLarge
from ..settings import SdkApp
from .http import json_response
from .identity import session_of
from .runtime import Runtime

CHUNK = 64 * 1024
SNIFF_BYTES = 8192
UPLOAD_TTL_S = 86_400


def sniff(head: bytes) -> str | None:
    """The content's type from its first bytes, or None when unknown."""
    kind = filetype.guess(head)
    if kind is not None:
        return str(kind.mime)
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 3:  # not just a character cut at the sniff boundary
                return None
        return "text/plain"
    return None


async def upload(request: web.Request, runtime: Runtime, app: SdkApp) -> web.Response:
    session = await session_of(runtime.state, app, request.headers.get("Authorization"))
    if request.content_type != "multipart/form-data":
        raise MediaTypeUnsupported("Send multipart/form-data with one `file` part.")
    policy = app.uploads
    try:
        reader = await request.multipart()
        part = await reader.next()
        while part is not None and (not isinstance(part, BodyPartReader) or part.name != "file"):
            part = await reader.next()
        if part is None:
            raise Invalid("Send one part named `file`.", "missing", {"file": "required"})
        head = bytearray()

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await part.read_chunk(CHUNK):
                if len(head) < SNIFF_BYTES:
                    head.extend(chunk[:SNIFF_BYTES - len(head)])
                yield chunk

        try:
            stored = await request.app[BLOBS].put_stream(chunks(), max_bytes=policy.max_bytes)
        except BlobTooLarge as exc:
            raise PayloadTooLarge(f"The file is over {policy.max_bytes} bytes.") from exc
        original = part.filename or "attachment"
    except (ValueError, AssertionError, BadHttpMessage) as exc:
        raise BodyMalformed(f"The multipart body is malformed: {exc}") from exc
    if stored.size == 0:
        raise Invalid("The file is empty.", "empty_file", {"file": "empty"})
    content_type = sniff(bytes(head))
    if content_type is None or content_type not in policy.allowed_types:
        raise MediaTypeUnsupported(
            f"This kind of file is not accepted ({content_type or 'unknown'}); accepted: "
            + ", ".join(policy.allowed_types))
    attachment = Attachment(filename=sanitize_filename(original),
                            original_filename=clean_original_filename(original),
                            content_type=content_type, size=stored.size,
                            sha256=digest_of(stored.ref), blob=stored.ref)
    upload_id = str(uuid.uuid4())
    await runtime.state.store.namespace("sdk:upload").put(upload_id, {
        "owner": session.owner.as_json(), "attachment": attachment.model_dump(),
        "expires_at": time.time() + UPLOAD_TTL_S})
    return json_response({"upload_id": upload_id, "filename": attachment.filename,
                          "content_type": content_type, "size": stored.size,
                          "sha256": attachment.sha256}, status=201)
