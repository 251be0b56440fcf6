"""The WeChat channel's errors, each a kernel error with the status and reason the edge answers."""

from __future__ import annotations

from intake import Rejected, Transient


class AccountUnknown(Rejected):
    """No account with this id in `channels.wechat.accounts` (404)."""

    reason = "account_unknown"
    status = 404


class PayloadTooLarge(Rejected):
    reason = "payload_too_large"
    status = 413


class SignatureInvalid(Rejected):
    """`signature` or `msg_signature` missing or wrong (403)."""

    reason = "bad_signature"
    status = 403


class TimestampStale(Rejected):
    """The timestamp is outside the account's `max_clock_skew_s`, or not a number (403)."""

    reason = "stale_timestamp"
    status = 403


class NonceReplayed(Rejected):
    """A (timestamp, nonce, signature) seen before carried another body (403)."""

    reason = "replayed_nonce"
    status = 403


class ModeWrong(Rejected):
    """A plain request to an encrypted account, or an encrypted one to a plain account (403)."""

    reason = "wrong_mode"
    status = 403


class DecryptFailed(Rejected):
    """The ciphertext does not decrypt, or decrypts for another AppID / CorpID (403)."""

    reason = "decrypt_failed"
    status = 403


class RecipientWrong(Rejected):
    """`ToUserName` is not this account's original id (WeCom: its CorpID) (403)."""

    reason = "wrong_recipient"
    status = 403


class XmlInvalid(Rejected):
    """Malformed XML, a DTD or entity, bad UTF-8, no `<xml>` root or a required field (400)."""

    reason = "bad_xml"
    status = 400


class NotDurable(Transient):
    """The callback could not be made durable within the deadline: 503, WeChat retries."""

    reason = "not_durable"


class ApiError(Transient):
    """A WeChat API call failed for now (network, 5xx, -1 system busy); `errcode` if any."""

    reason = "wechat_api_unavailable"

    def __init__(self, message: str, *, errcode: int | None = None) -> None:
        super().__init__(message)
        self.errcode = errcode


class ApiRefused(Rejected):
    """WeChat answered an errcode that will not change by trying again."""

    reason = "wechat_api_refused"

    def __init__(self, message: str, *, errcode: int) -> None:
        super().__init__(message)
        self.errcode = errcode
