"""The SDK channel's errors, each a kernel error with a stable reason (the `error` answered)."""

from __future__ import annotations

from typing import Any

from intake import Rejected


class AppUnknown(Rejected):
    reason = "unknown_app"
    status = 404


class NotFound(Rejected):
    """Missing, or another user's: the same answer for both."""

    reason = "not_found"
    status = 404


class Unauthorized(Rejected):
    """Every identity failure is 401; `reason` tells which (invalid_identity, …)."""

    reason = "invalid_identity"
    status = 401

    def __init__(self, message: str, reason: str = "invalid_identity") -> None:
        super().__init__(message, reason=reason)


class OriginForbidden(Rejected):
    reason = "origin_forbidden"
    status = 403


class BodyMalformed(Rejected):
    reason = "malformed_body"
    status = 400


class PayloadTooLarge(Rejected):
    reason = "payload_too_large"
    status = 413


class MediaTypeUnsupported(Rejected):
    reason = "unsupported_media_type"
    status = 415


class Invalid(Rejected):
    """422 naming each field at fault; `reason` is the first problem's code."""

    reason = "invalid"
    status = 422

    def __init__(self, message: str, reason: str = "invalid",
                 fields: dict[str, Any] | None = None) -> None:
        super().__init__(message, reason=reason)
        self.fields = fields or {}


class Conflict(Rejected):
    reason = "conflict"
    status = 409

    def __init__(self, message: str, reason: str = "conflict") -> None:
        super().__init__(message, reason=reason)


class RateLimited(Rejected):
    reason = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, int(retry_after_s + 0.999))
