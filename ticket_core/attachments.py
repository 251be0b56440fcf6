"""`GET /api/v1/attachments/{sha256}`: an attachment's bytes, served so a browser cannot run them.

Only blobs some stored message references are served (the blob store also holds raw payloads,
which are not the agents'). The answer carries the stored content type, `Content-Disposition:
attachment` with the stored (already cleaned) file name per RFC 6266 (`filename*=UTF-8''…`
plus an ASCII fallback), `X-Content-Type-Options: nosniff` and a sandboxing CSP.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from aiohttp import web

from intake.blobs import BlobStore
from intake.http import error_response

from .queries import TicketReader

DIGEST = re.compile(r"^[0-9a-f]{64}$")
SAFE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "private, max-age=0, no-store",
    "Referrer-Policy": "no-referrer",
}
# A content type that is a plain `type/subtype` with optional parameters; anything else (a
# stored value with a CR/LF or a quote in it) is served as bytes.
CONTENT_TYPE = re.compile(r"^[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64}"
                          r"(?:\s*;\s*[A-Za-z0-9_.-]{1,32}=[A-Za-z0-9_.+-]{1,64})*$")


def content_disposition(filename: str) -> str:
    """`attachment; filename="ascii"; filename*=UTF-8''percent-encoded` (RFC 6266 §4.3)."""
    # The fallback keeps printable ASCII only; quotes and backslashes become '_'.
    folded = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    fallback = re.sub(r'[^\x20-\x7e]|["\\]', "_", folded).strip() or "attachment"
    encoded = quote(filename, safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def attachment_handler(reader: TicketReader, blobs: BlobStore | None) -> web.RouteDef:
    async def get_attachment(request: web.Request) -> web.StreamResponse:
        digest = request.match_info["sha256"]
        if not DIGEST.match(digest):
            return error_response(404, "attachment_not_found",
                                  "Attachments are named by their SHA-256 (64 hex digits).")
        stored = await reader.referenced_blob(digest)
        data = None
        if stored is not None and blobs is not None:
            try:
                data = await blobs.get(f"sha256:{digest}")
            except (FileNotFoundError, ValueError):
                data = None
        if stored is None or data is None:
            return error_response(404, "attachment_not_found", f"No attachment {digest}.")
        content_type = (stored.content_type if CONTENT_TYPE.match(stored.content_type)
                        else "application/octet-stream")
        return web.Response(body=data, headers={
            "Content-Type": content_type,
            "Content-Disposition": content_disposition(stored.filename),
            **SAFE_HEADERS})

    return web.get("/api/v1/attachments/{sha256}", get_attachment)
