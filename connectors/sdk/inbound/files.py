"""Attachment downloads by short-lived signed URL: `GET /sdk/v1/apps/{app}/files/{sha256}`.

`GET /tickets/{id}` gives each attachment a `url` valid for `URL_LIFETIME_S`, signed with the
app's identity secret over the digest, the name, the type and the expiry (so the URL works in an
`<img>` without the session header, and for nobody else after it expires). Only raster images
are served inline; anything else (SVG and HTML included) is a download, with `nosniff` and a
sandboxing CSP.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import urllib.parse
from typing import Any

from aiohttp import web

from intake import BLOBS, IntakeError, error_answer

from ..errors import NotFound
from ..settings import SdkApp
from .runtime import runtime_of

URL_LIFETIME_S = 600
_SHA256 = re.compile(r"[0-9a-f]{64}")
INLINE = {"image/png", "image/jpeg", "image/gif", "image/webp"}
_PROCESS_KEY = secrets.token_bytes(32)  # for an app without a secret: this replica's URLs only


def _key(app: SdkApp) -> bytes:
    return app.identity_secret.encode() if app.identity_secret else _PROCESS_KEY


def _signature(app: SdkApp, sha256: str, name: str, content_type: str, expires: int) -> str:
    message = "\n".join(["file", app.id, sha256, name, content_type, str(expires)]).encode()
    return hmac.new(_key(app), message, hashlib.sha256).hexdigest()


def signed_url(app: SdkApp, attachment: dict[str, Any], now: float | None = None) -> str:
    expires = int((now or time.time()) + URL_LIFETIME_S)
    sha, name, kind = attachment["sha256"], attachment["filename"], attachment["content_type"]
    query = urllib.parse.urlencode({"name": name, "type": kind, "exp": expires,
                                    "sig": _signature(app, sha, name, kind, expires)})
    return f"/sdk/v1/apps/{app.id}/files/{sha}?{query}"


def with_urls(app: SdkApp, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    now = time.time()
    return [{**m, "attachments": [{**a, "url": signed_url(app, a, now)}
                                  for a in m.get("attachments", [])]} for m in messages]


async def download(request: web.Request) -> web.StreamResponse:
    try:
        runtime = await runtime_of(request)
        app = runtime.app(request.match_info["app"])
        sha = request.match_info["sha256"]
        if not _SHA256.fullmatch(sha):
            raise NotFound("There is no such file.")
        name, kind = request.query.get("name", ""), request.query.get("type", "")
        try:
            expires = int(request.query.get("exp", "0"))
        except ValueError:
            expires = 0
        given = request.query.get("sig", "")
        wanted = _signature(app, sha, name, kind, expires)
        if expires < time.time() or not hmac.compare_digest(wanted, given):
            raise NotFound("There is no such file, or its link expired.")
        try:
            body = await request.app[BLOBS].get(f"sha256:{sha}")
        except (KeyError, FileNotFoundError, ValueError) as exc:
            raise NotFound("There is no such file.") from exc
    except IntakeError as exc:
        return error_answer(exc, "sdk")
    inline = kind in INLINE
    quoted = urllib.parse.quote(name, safe="")
    disposition = "inline" if inline else "attachment"
    return web.Response(body=body, content_type=kind if inline else "application/octet-stream",
                        headers={"Content-Disposition": f"{disposition}; filename*=UTF-8''{quoted}",
                                 "X-Content-Type-Options": "nosniff",
                                 "Content-Security-Policy": "default-src 'none'; sandbox",
                                 "Cache-Control": "private, max-age=600"})
