"""The demo shop page (`/sdk/demo`) and its signing endpoint, for apps with `demo: true`.

`POST /sdk/demo/sign` computes the user hash a company's backend would, so the page can sign
a user in without the secret reaching the browser; it answers only on loopback and only for
demo apps (403 otherwise).
"""

from __future__ import annotations

import html
import ipaddress
from pathlib import Path

from aiohttp import web

from intake import IntakeError, error_answer

from ..errors import AppUnknown, OriginForbidden
from .http import json_response, read_json
from .identity import check_user_id, user_hash
from .runtime import runtime_of

HERE = Path(__file__).resolve().parent.parent
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                           "img-src 'self' data:; connect-src 'self' ws: wss:; "
                                           "object-src 'none'; base-uri 'none'",
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


async def page(request: web.Request) -> web.StreamResponse:
    runtime = await runtime_of(request)
    wanted = request.query.get("app", "demo-widget")
    app = runtime.accounts.app(wanted)
    if app is None or not app.demo:
        app = next((a for a in runtime.accounts.apps if a.demo), None)
    if app is None:
        return error_answer(AppUnknown("No app has demo: true."), "sdk")
    text = (HERE / "templates" / "demo.html").read_text(encoding="utf-8")
    body = text.replace("{{ app }}", html.escape(app.id, quote=True))
    return web.Response(text=body, content_type="text/html", charset="utf-8",
                        headers=PAGE_HEADERS)


async def script(request: web.Request) -> web.StreamResponse:
    return web.Response(body=(HERE / "static" / "demo.js").read_bytes(),
                        content_type="text/javascript", charset="utf-8")


async def sign(request: web.Request) -> web.StreamResponse:
    try:
        runtime = await runtime_of(request)
        if not _loopback(request.remote):
            raise OriginForbidden("The demo signer answers on loopback only.")
        body = await read_json(request, 4096)
        app = runtime.app(str(body.get("app", "")))
        if not app.demo or not app.identity_secret:
            raise OriginForbidden("This app is not a demo app.")
        user_id = check_user_id(body.get("user_id"))
        return json_response({"user_hash": user_hash(app.identity_secret, user_id)})
    except IntakeError as exc:
        return error_answer(exc, "sdk")
