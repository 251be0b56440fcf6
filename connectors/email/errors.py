"""The email channel's errors, each a kernel error with a stable reason."""

from intake import Rejected, Transient


class MailboxUnknown(Rejected):
    """RCPT names an address at our domains that no account has (550 5.1.1)."""

    reason = "mailbox_unknown"
    smtp_code = 550


class RelayDenied(Rejected):
    """RCPT names a foreign domain (550 5.7.1): we are no open relay."""

    reason = "relay_denied"
    smtp_code = 550


class RelayUnavailable(Transient):
    """The outbound relay could not be reached or answered 4xx: retried."""

    reason = "relay_unavailable"


class NonAsciiAddressRefused(Rejected):
    """A non-ASCII recipient, and the relay does not offer SMTPUTF8."""

    reason = "smtputf8_unsupported"
