"""The SDK's HTTP conventions: per-app CORS, JSON bodies with limits, and one error shape."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from intake import IntakeError, error_answer

from ..errors import BodyMalformed, MediaTypeUnsupported, OriginForbidden, PayloadTooLarge
from ..settings import SdkApp
from .runtime import Runtime, runtime_of

CHUNK = 64 * 1024
ALLOWED_HEADERS = "authorization, content-type"
ALLOWED_METHODS = "GET, POST, DELETE, OPTIONS"
PREFLIGHT_MAX_AGE = "600"
Handler = Callable[[web.Request, Runtime, SdkApp], Awaitable[web.StreamResponse]]


def check_origin(request: web.Request, app: SdkApp) -> str | None:
    """The request's allowed Origin (None without one: native clients send none), else 403."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    if origin not in app.allowed_origins:
        raise OriginForbidden(f"The origin {origin!r} is not allowed for this app.")
    return origin


def cors_headers(origin: str | None) -> dict[str, str]:
    if origin is None:
        return {"Vary": "Origin"}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def api(handler: Handler, *, rate_limited: bool = True) -> Callable[
        [web.Request], Awaitable[web.StreamResponse]]:
    """A handler under `/sdk/v1/apps/{app}`: its app (404), origin (403), the app's rate limit,
    kernel errors answered in the one shape, CORS headers on every answer."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        origin: str | None = None
        try:
            runtime = await runtime_of(request)
            app = runtime.app(request.match_info["app"])
            origin = check_origin(request, app)
            if rate_limited:
                runtime.limit(runtime.app_limiters[app.id], app.id, "requests for this app")
            response = await handler(request, runtime, app)
        except IntakeError as exc:
            response = error_answer(exc, "sdk")
        for name, value in cors_headers(origin).items():
            response.headers[name] = value
        return response

    return wrapped


async def preflight(request: web.Request) -> web.StreamResponse:
    """A CORS preflight: the allowed origin echoed (never `*`), else no CORS headers and 403."""
    try:
        runtime = await runtime_of(request)
        app = runtime.app(request.match_info["app"])
        origin = check_origin(request, app)
    except IntakeError as exc:
        return error_answer(exc, "sdk")
    headers = cors_headers(origin)
    headers.update({"Access-Control-Allow-Methods": ALLOWED_METHODS,
                    "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                    "Access-Control-Max-Age": PREFLIGHT_MAX_AGE})
    return web.Response(status=204, headers=headers)


async def read_json(request: web.Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object: 415 unless JSON, 413 over `limit`, 400 if malformed."""
    if request.content_type != "application/json":
        raise MediaTypeUnsupported("Send application/json.")
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The body is over {limit} bytes.")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is over {limit} bytes.")
        chunks.append(chunk)
    data = parse_json(b"".join(chunks))
    if not isinstance(data, dict):
        raise BodyMalformed("Send a JSON object.")
    return data


def parse_json(body: bytes | str) -> Any:
    """JSON as sent; a lone surrogate escape (`"\\ud800"`) parses, for the text check to
    refuse as `invalid_text`, while NaN, Infinity and overdeep nesting are malformed."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as first:
        try:
            return json.loads(body, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise BodyMalformed(f"The body is not valid JSON: {first}") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
