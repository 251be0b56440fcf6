"""The one JSON error shape of every HTTP service: `{"error", "message", "fields"}`."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def error_response(status: int, error: str, message: str,
                   fields: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    """A JSON error answer; `error` is the stable snake_case code, `fields` is always present."""
    return web.json_response({"error": error, "message": message, "fields": fields or {}},
                             status=status, headers=headers)
