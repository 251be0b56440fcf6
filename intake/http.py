"""The one JSON error shape of every HTTP service, and the one mapping of errors to answers."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .errors import Ignored, IntakeError, Rejected, Transient, Unsupported
from .metrics import IGNORED


def error_response(status: int, error: str, message: str,
                   fields: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    """A JSON error answer; `error` is the stable snake_case code, `fields` is always present."""
    return web.json_response({"error": error, "message": message, "fields": fields or {}},
                             status=status, headers=headers)


def error_answer(error: IntakeError, channel: str = "") -> web.Response:
    """The HTTP answer for a kernel error, the same at every edge (see intake/errors.py).

    `Rejected`: its `status` (4xx) with its reason and `fields` if it has them; `Transient`:
    503 with Retry-After; `Ignored` 200 and `Unsupported` 202, both success: the source must
    not retry what was dropped on purpose or kept for later. An `Ignored` is counted in
    `intake_ignored_total{service,channel,reason}` (at an edge, its service is its channel).
    """
    fields = getattr(error, "fields", None)
    if isinstance(error, Rejected):
        headers = None
        retry_after = getattr(error, "retry_after_s", None)
        if retry_after is not None:  # e.g. a rate limit: the caller must slow down
            headers = {"Retry-After": str(int(retry_after))}
        return error_response(error.status, error.reason, str(error), fields, headers)
    if isinstance(error, Ignored):
        IGNORED.labels(channel or "unknown", channel or "unknown", error.reason).inc()
        return web.json_response({"status": "ignored", "reason": error.reason}, status=200)
    if isinstance(error, Unsupported):
        return web.json_response({"status": "accepted", "reason": error.reason}, status=202)
    retry_after_s = error.retry_after_s if isinstance(error, Transient) else 5
    return error_response(503, error.reason, str(error), fields,
                          {"Retry-After": str(int(retry_after_s))})
