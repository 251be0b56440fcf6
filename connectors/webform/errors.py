"""The web form channel's errors, each a kernel error with the status the edge answers."""

from __future__ import annotations

from intake import Rejected


class FormUnknown(Rejected):
    """No form with this id in `channels.webform.forms` (404)."""

    reason = "form_not_found"
    status = 404


class SubmissionInvalid(Rejected):
    """One or more fields failed validation (422); `fields` maps a field name to its message."""

    reason = "validation_failed"
    status = 422

    def __init__(self, fields: dict[str, str], message: str = "") -> None:
        super().__init__(message or "Some fields need attention.")
        self.fields = fields


class PayloadTooLarge(Rejected):
    """The body or a file is over its limit (413); `fields` names the file field if known."""

    reason = "payload_too_large"
    status = 413

    def __init__(self, message: str, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.fields = fields or {}


class MediaTypeUnsupported(Rejected):
    """Neither urlencoded, multipart nor JSON (415)."""

    reason = "unsupported_media_type"
    status = 415


class BodyMalformed(Rejected):
    """The body does not parse as its declared content type (400)."""

    reason = "malformed_body"
    status = 400


class RateLimited(Rejected):
    """Too many submissions from one address (429); `retry_after_s` goes in Retry-After.

    A Rejected rather than a Transient: the caller, not the gateway, must slow down.
    """

    reason = "rate_limited"
    status = 429

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"Too many submissions; try again in {retry_after_s} s.")
        self.retry_after_s = retry_after_s


class IdempotencyKeyInvalid(Rejected):
    """The Idempotency-Key header is empty, too long or not printable ASCII (400)."""

    reason = "idempotency_key_invalid"
    status = 400
