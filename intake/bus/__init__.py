"""The bus on RabbitMQ: topology, confirmed publish, ack-after-work consume, dead letters.

Channel code never touches aio-pika; it publishes through `Publisher` (intake.outbox) and
consumes by handing `Bus.consume` an async function that takes a model and returns, or raises a
kernel error: `Rejected` dead-letters at once, anything else is retried up to the delivery limit.

`Bus` is assembled from one part per module: `connection` (connect, reconnect, the publish
channel, under the supervisor), `topology` (names, exchanges, queues), `owned` (a connector's
own exchanges and queues), `publish` (confirmed publishes, dead-lettering), `settle` (acks,
deferred multiple acks, retries counted by the gateway, dead letters, requeues), `consumer`
(consume, one by one or in batches) and `dead` (browse and replay `intake.dead`).
`Bus.problems()` names the broker connection or a consumer that is down, starting or holding
messages, for /readyz.
"""

from __future__ import annotations

from .connection import BROKER_COMPONENT, BusConnection, ConnectionLost
from .consumer import (
    HOLD_FIRST_RETRY_S,
    PIPELINE_MIN,
    BatchHandler,
    BusConsumers,
    ConsumerLost,
    Delivery,
    Handler,
)
from .dead import BusDeadLetters, DeadLetter
from .publish import BusPublish
from .settle import ACK_DELAY_S, ATTEMPT_HEADER, BusSettle, attempt_of
from .topology import CORE_QUEUES, EXCHANGES, REASON_HEADER, Names


class Bus(BusConsumers, BusDeadLetters):
    """One connection per process: a confirmed publish channel and a channel per consumer."""


__all__ = [
    "ACK_DELAY_S", "ATTEMPT_HEADER", "BROKER_COMPONENT", "CORE_QUEUES", "EXCHANGES",
    "HOLD_FIRST_RETRY_S", "PIPELINE_MIN", "REASON_HEADER", "BatchHandler", "Bus",
    "BusConnection", "BusConsumers", "BusDeadLetters", "BusPublish", "BusSettle", "ConnectionLost",
    "ConsumerLost", "DeadLetter", "Delivery", "Handler", "Names", "attempt_of",
]
