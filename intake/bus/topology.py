"""The bus's names and topology: exchanges, core queues, queue arguments and declaring them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractQueue

EXCHANGES = ("inbound", "routed", "outbound", "delivery", "events", "dead")
# queue -> (exchange it is bound to, binding key)
CORE_QUEUES: dict[str, tuple[str, str]] = {
    "router": ("inbound", "#"),
    "ticket_core": ("routed", "#"),
    "ticket_core.delivery": ("delivery", "#"),
}
REASON_HEADER = "x-intake-reason"


@dataclass(frozen=True)
class Names:
    """Exchange and queue names, with the test run's prefix (`INTAKE_BUS_PREFIX`)."""

    prefix: str = ""

    def __call__(self, logical: str) -> str:
        name = f"intake.{logical}"
        return f"{self.prefix}.{name}" if self.prefix else name


def broker_delivery_limit(delivery_limit: int) -> int:
    """The quorum queue's own limit: a safety net above the gateway's count of attempts.

    The gateway counts attempts itself (`x-intake-attempt`, see intake.bus.settle); the
    broker's count grows only with what the gateway does not see: a crash loop, deliveries
    returned by closed channels. It must not cut the gateway's retries short.
    """
    return delivery_limit * 2 + 1


def queue_arguments(names: Names, delivery_limit: int) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        # A poison message that crashes the process ends in intake.dead instead of looping.
        "x-delivery-limit": broker_delivery_limit(delivery_limit),
        "x-dead-letter-exchange": names("dead"),
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_queue(connection: AbstractConnection, channel: AbstractChannel, name: str,
                        arguments: dict[str, Any], log: Any) -> AbstractQueue:
    """Declare a quorum queue; if it exists with other arguments, use it as it is.

    RabbitMQ refuses a redeclaration with different arguments (say, another delivery
    limit) by closing the channel; a service must still start, so it warns and goes on.
    """
    probe = await connection.channel()
    try:
        await probe.declare_queue(name, durable=True, arguments=arguments)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        log.warning("queue_arguments_differ", queue=name, error=str(exc),
                    hint="the queue keeps its arguments; set them by policy")
    finally:
        if not probe.is_closed:
            await probe.close()
    return await channel.get_queue(name, ensure=True)


# `intake.dead` is a stream: reading it (`intake dlq list`) never consumes, counts or reorders
# a letter, on any RabbitMQ from 3.9 (see intake/bus/dead.py).
DEAD_ARGUMENTS: dict[str, Any] = {"x-queue-type": "stream"}


async def declare_dead(connection: AbstractConnection, channel: AbstractChannel, names: Names,
                       exchange: AbstractExchange, log: Any) -> None:
    """Declare the `intake.dead` stream and bind it to the dead exchange.

    An `intake.dead` quorum queue from an older version refuses the redeclaration (its type
    differs): it is kept and bound as it is, so letters still land safely in it, until
    `intake dlq migrate` moves them into the stream.
    """
    name = names("dead")
    probe = await connection.channel()
    try:
        await probe.declare_queue(name, durable=True, arguments=DEAD_ARGUMENTS)
    except aiormq.exceptions.ChannelPreconditionFailed:
        log.warning("dead_letters_in_old_queue", queue=name,
                    hint="run `intake dlq migrate` once: it moves them into a stream, which "
                         "`intake dlq list` can read without consuming them")
    finally:
        if not probe.is_closed:
            await probe.close()
    dead = await channel.get_queue(name, ensure=False)
    await dead.bind(exchange, "#")


async def declare_core(connection: AbstractConnection, channel: AbstractChannel, names: Names,
                       arguments: dict[str, Any], log: Any) -> dict[str, AbstractExchange]:
    """Declare the exchanges, `intake.dead` and the core queues; returns the exchanges."""
    exchanges: dict[str, AbstractExchange] = {}
    for logical in EXCHANGES:
        exchanges[logical] = await channel.declare_exchange(
            names(logical), aio_pika.ExchangeType.TOPIC, durable=True)
    await declare_dead(connection, channel, names, exchanges["dead"], log)
    for logical, (exchange, key) in CORE_QUEUES.items():
        queue = await declare_queue(connection, channel, names(logical), arguments, log)
        await queue.bind(exchanges[exchange], key)
    return exchanges


async def exists(connection: AbstractConnection, name: str, kind: str) -> bool:
    """Whether the queue or exchange `name` exists (a passive declare on a probe channel,
    which the broker closes when it does not)."""
    probe = await connection.channel()
    try:
        if kind == "queue":
            await probe.declare_queue(name, passive=True)
        else:
            await probe.declare_exchange(name, passive=True)
        return True
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        if not probe.is_closed:
            await probe.close()


async def check_core(connection: AbstractConnection, channel: AbstractChannel, names: Names,
                     ) -> tuple[dict[str, AbstractExchange], list[str]]:
    """`INTAKE_BUS_DECLARE=false`: declare nothing; the exchanges (as handles) and the names
    of the core exchanges and queues that do not exist."""
    exchanges: dict[str, AbstractExchange] = {}
    missing: list[str] = []
    for logical in EXCHANGES:
        if not await exists(connection, names(logical), "exchange"):
            missing.append(f"exchange {names(logical)}")
        exchanges[logical] = await channel.get_exchange(names(logical), ensure=False)
    for logical in ["dead", *CORE_QUEUES]:
        if not await exists(connection, names(logical), "queue"):
            missing.append(f"queue {names(logical)}")
    return exchanges, missing
