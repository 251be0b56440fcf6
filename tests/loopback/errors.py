"""The loopback channel's errors."""

from __future__ import annotations

from intake import Rejected


class FrameMalformed(Rejected):
    """A frame is not `account|external id|email|text` (the transport answers `ERR`)."""

    reason = "frame_malformed"


class AccountUnknown(Rejected):
    reason = "account_unknown"
