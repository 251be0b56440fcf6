"""The four kinds of failure; every channel and service error subclasses one of them.

`Rejected` is permanent (4xx at the edge, straight to `intake.dead` on the bus), `Ignored` is a
known event dropped on purpose, `Unsupported` is an event type never seen (success to the source,
raw payload dead-lettered for a later replay), `Transient` means try again.
"""

from __future__ import annotations

from typing import Any


class IntakeError(Exception):
    """Base of the gateway's errors; `reason` is the stable snake_case code ops see."""

    reason: str = "error"

    def __init__(self, message: str = "", *, reason: str | None = None, **details: Any) -> None:
        super().__init__(message or self.__class__.__name__)
        if reason is not None:
            self.reason = reason
        self.details = details


class Rejected(IntakeError):
    reason = "rejected"


class Ignored(IntakeError):
    reason = "ignored"


class Unsupported(IntakeError):
    reason = "unsupported_event"


class Transient(IntakeError):
    reason = "transient"
    # True for an outage of something every message needs (the database): the consumer then
    # holds the message and retries in place instead of spending its delivery limit.
    hold = False


class SchemaInvalid(Rejected):
    reason = "schema_invalid"


class ConfigInvalid(Rejected):
    """The YAML config is wrong; `problems` name the file, line and field of each mistake."""

    reason = "config_invalid"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class BrokerUnavailable(Transient):
    reason = "broker_unavailable"


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
