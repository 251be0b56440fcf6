"""The REST handlers under `/sdk/v1/apps/{app}`: sessions, config, tickets, messages."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from intake import client_address

from ..settings import SdkApp
from ..state import Session
from . import faq, tickets
from .http import json_response, read_json
from .identity import open_session, session_of
from .runtime import Runtime

LIST_LIMIT = 50


async def _session(request: web.Request, runtime: Runtime, app: SdkApp) -> Session:
    return await session_of(runtime.state, app, request.headers.get("Authorization"))


def _answer(result: dict[str, object], fresh: bool) -> web.Response:
    return json_response(result, status=201 if fresh else 200)


async def create_session(request: web.Request, runtime: Runtime, app: SdkApp) -> web.Response:
    body = await read_json(request, runtime.settings.max_body_bytes)
    if not ({"jwt", "user_hash", "device_token"} & body.keys()):
        # A new anonymous device: rate-limited per client address.
        ip = client_address(request.remote, request.headers,
                            trust_forwarded_for=runtime.settings.trust_forwarded_for)
        runtime.limit(runtime.anonymous_limiters[app.id], ip, "new sessions")
    token, session, device_token = await open_session(runtime.state, app, body)
    answer: dict[str, object] = {
        "session_token": token,
        "expires_at": _iso(session.expires_at),
        "user": {"id": session.owner.subject if session.verified else None,
                 "verified": session.verified, "name": session.display_name}}
    if device_token is not None:
        answer["device_token"] = device_token
    return json_response(answer, status=201)


async def delete_session(request: web.Request, runtime: Runtime, app: SdkApp) -> web.Response:
    session = await _session(request, runtime, app)
    await runtime.state.revoke(session)
    return web.Response(status=204)


async def config(request: web.Request, runtime: Runtime, app: SdkApp) -> web.Response:
    widget = app.widget
    return json_response({
        "app": app.id, "title": widget.title, "colour": widget.colour,
        "greeting": widget.greeting, "tabs": widget.tabs, "locale": widget.locale,
        "anonymous_allowed": app.allow_anonymous and not app.hmac_mandatory,
        "ticket_fields": [f.model_dump(exclude_none=True) for f in app.ticket_fields],
        "uploads": {"max_bytes": app.uploads.max_bytes,
                    "allowed_types": app.uploads.allowed_types},
        "max_message_chars": app.max_message_chars})


async def submit_ticket(request: web.Request, runtime: Runtime, app: SdkApp) -> web.Response:
    session = await _session(request, runtime, app)
    body = await read_json(request, runtime.settings.max_body_bytes)
    return _answer(*await tickets.submit_ticket(runtime, request.app, app, session, body))


async def list_tickets(request: web.Request, runtime: Runtime, app: SdkApp) -> web.Response:
    session = await _session(request, runtime, app)
    return json_response(await tickets.list_tickets(
        runtime, session, request.query.get("cursor"), LIST_LIMIT))


async def ticket(request: web.Request, runtime: Runtime, app: SdkApp) -> web.Response:
    session = await _session(request, runtime, app)
    return json_response(await tickets.ticket_detail(
        runtime, session, request.match_info["ticket_id"]))


async def post_message(request: web.Request, runtime: Runtime, app: SdkApp) -> web.Response:
    session = await _session(request, runtime, app)
    body = await read_json(request, runtime.settings.max_body_bytes)
    return _answer(*await tickets.post_message(
        runtime, request.app, app, session, request.match_info.get("ticket_id"), body))


async def mark_read(request: web.Request, runtime: Runtime, app: SdkApp) -> web.Response:
    session = await _session(request, runtime, app)
    body = await read_json(request, runtime.settings.max_body_bytes)
    return json_response(await tickets.mark_read(
        runtime, session, request.match_info["ticket_id"], body))


async def rate(request: web.Request, runtime: Runtime, app: SdkApp) -> web.Response:
    session = await _session(request, runtime, app)
    body = await read_json(request, runtime.settings.max_body_bytes)
    return _answer(*await tickets.rate(
        runtime, request.app, session, request.match_info["ticket_id"], body))


def _iso(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).isoformat()


async def faq_search(request: web.Request, runtime: Runtime, app: SdkApp) -> web.Response:
    return json_response(await faq.search(request, runtime.faq, app))


async def faq_article(request: web.Request, runtime: Runtime, app: SdkApp) -> web.Response:
    return json_response(await faq.article(request, runtime.faq, app))


STATIC = Path(__file__).resolve().parent.parent / "static"
SCRIPT_TYPES = {".js": "text/javascript"}


async def static_file(request: web.Request) -> web.Response:
    """The SDK's scripts, public: any page may load them (they hold no secret)."""
    name = request.match_info["name"]
    path = STATIC / name
    if "/" in name or path.suffix not in SCRIPT_TYPES or not path.is_file():
        raise web.HTTPNotFound()
    return web.Response(body=path.read_bytes(), content_type=SCRIPT_TYPES[path.suffix],
                        charset="utf-8",
                        headers={"Cache-Control": "public, max-age=300",
                                 "Access-Control-Allow-Origin": "*",
                                 "X-Content-Type-Options": "nosniff"})


async def openapi(request: web.Request) -> web.Response:
    from ..openapi import build_openapi

    return json_response(build_openapi())


async def asyncapi(request: web.Request) -> web.Response:
    from ..openapi import build_asyncapi

    return json_response(build_asyncapi())
