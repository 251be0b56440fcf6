"""The telephony channel's errors, each a kernel error with the status the edge answers."""

from __future__ import annotations

from intake import Rejected


class LineUnknown(Rejected):
    """No line with this id for this adapter (404)."""

    reason = "unknown_line"
    status = 404


class SignatureMissing(Rejected):
    reason = "signature_missing"
    status = 403


class SignatureInvalid(Rejected):
    reason = "signature_invalid"
    status = 403


class TimestampOutOfWindow(Rejected):
    """A signed request whose timestamp is too far from the gateway clock: a replay (403)."""

    reason = "timestamp_out_of_window"
    status = 403


class JsonInvalid(Rejected):
    reason = "invalid_json"
    status = 400


class MediaTypeUnsupported(Rejected):
    reason = "unsupported_media_type"
    status = 415


class PayloadTooLarge(Rejected):
    reason = "payload_too_large"
    status = 413


class EventInvalid(Rejected):
    """A schema error (422); `fields` maps each field at fault to its message."""

    reason = "validation_failed"
    status = 422

    def __init__(self, fields: dict[str, str], message: str = "") -> None:
        super().__init__(message or "Some events are not valid call events.")
        self.fields = fields
