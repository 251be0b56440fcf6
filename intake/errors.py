"""The four kinds of failure, each with one meaning at every edge; every error subclasses one.

| kind          | HTTP edge                      | SMTP edge | on the bus                         |
| ------------- | ------------------------------ | --------- | ---------------------------------- |
| `Rejected`    | 4xx, its `status` and `reason` | 5xx (550) | dead-lettered at once, `reason`    |
| `Ignored`     | success (200)                  | 250       | acked, counted                     |
| `Unsupported` | success (202)                  | 250       | kept as a message (see below)      |
| `Transient`   | 503 with Retry-After           | 451       | retried up to the delivery limit   |

`intake.http.error_answer` and `smtp_reply` below are the one mapping; edges call them instead
of choosing codes of their own.

`Unsupported` is an event type the channel does not understand yet. It is never dropped: the
connector still publishes a message for it, with the flag `unsupported_type` (and the raw
payload as its `raw` blob), so it reaches a ticket where an agent sees it, and can be
normalised again once the type is supported. The source gets success, so it does not retry
what a retry cannot fix.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class IntakeError(Exception):
    """Base of the gateway's errors; `reason` is the stable snake_case code ops see."""

    reason: str = "error"

    def __init__(self, message: str = "", *, reason: str | None = None, **details: Any) -> None:
        super().__init__(message or self.__class__.__name__)
        if reason is not None:
            self.reason = reason
        self.details = details


class Rejected(IntakeError):
    """Permanent: answered 4xx (`status`, 422 unless a subclass says) or SMTP 5xx."""

    reason = "rejected"
    status: int = 422
    smtp_code: int = 550


class Ignored(IntakeError):
    """A known event dropped on purpose (a menu click): success to the source, counted."""

    reason = "ignored"


class Unsupported(IntakeError):
    """An event type never seen: kept as a message flagged `unsupported_type`, never dropped."""

    reason = "unsupported_event"
    flag = "unsupported_type"


class Transient(IntakeError):
    """Try again: 503 with Retry-After (`retry_after_s`) at an HTTP edge, 451 at SMTP."""

    reason = "transient"
    retry_after_s: int = 5
    # True for an outage of something every message needs (the database): the consumer then
    # holds the message and retries in place instead of spending its delivery limit.
    hold = False


class SmtpReply(NamedTuple):
    code: int
    enhanced: str  # RFC 3463 status code
    text: str

    def line(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


# The SMTP side of the mapping, as data (RFC 5321 section 4.2.5; RFC 3463 codes).
SMTP_ACCEPTED = SmtpReply(250, "2.0.0", "OK")
SMTP_REJECTED = SmtpReply(550, "5.7.1", "rejected")
SMTP_TRANSIENT = SmtpReply(451, "4.3.0", "try again later")


def smtp_reply(error: IntakeError | None) -> SmtpReply:
    """The SMTP answer for an outcome: None (accepted), or one of the four kinds."""
    if error is None or isinstance(error, Ignored | Unsupported):
        return SMTP_ACCEPTED
    if isinstance(error, Rejected):
        return SmtpReply(error.smtp_code, SMTP_REJECTED.enhanced, error.reason)
    return SMTP_TRANSIENT


class SchemaInvalid(Rejected):
    reason = "schema_invalid"


class ConfigInvalid(Rejected):
    """The YAML config is wrong; `problems` name the file, line and field of each mistake."""

    reason = "config_invalid"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class SettingInvalid(Rejected):
    """An environment variable holds a value the service cannot use; the message names it."""

    reason = "setting_invalid"


class BodyTimedOut(Rejected):
    """The client did not send its whole request body in time (408)."""

    reason = "request_timeout"
    status = 408


class BrokerUnavailable(Transient):
    reason = "broker_unavailable"


class BrokerRefused(BrokerUnavailable):
    """The broker nacked a publish on a live connection: a quorum queue between leaders (its
    node was killed) or full (`reject-publish`). A consumer holds the message it is handling
    and publishes again; requeueing it would come straight back, fail the same way and spend
    the queue's delivery limit within seconds, dead-lettering accepted messages."""

    hold = True


class Unroutable(BrokerUnavailable):
    """The broker returned a `mandatory` publish: no queue is bound for its routing key.

    Transient because a consumer's queue may be declared again in a moment; the publisher
    retries it and, once its attempts are spent, dead-letters it with this reason.
    """

    reason = "unroutable"


class MessageTooLarge(Rejected):
    """A message bigger than `INTAKE_MAX_MESSAGE_BYTES`: refused before the outbox takes it.

    RabbitMQ closes the channel of a publish above its `max_message_size`; a message like that
    in an outbox would block everything queued behind it, so the edge answers it (HTTP 413).
    """

    reason = "message_too_large"
    status = 413


class StorageUnavailable(Transient):
    reason = "storage_unavailable"
    hold = True
