"""The router's consumer: an inbound message in, the same message stamped with its route out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from intake.message import Message, RouteDecision

from .reload import RulesHolder
from .rules import RuleSet

ROUTED_EXCHANGE = "routed"


class Publishing(Protocol):
    """The part of `intake.bus.Bus` the router uses."""

    async def publish(self, exchange: str, routing_key: str, body: bytes,
                      headers: dict[str, str] | None = None) -> None: ...

    async def publish_many(self, exchange: str,
                           items: Iterable[tuple[str, bytes, dict[str, Any] | None]],
                           ) -> None: ...


def owning_desk(decision: RouteDecision) -> str:
    """The desk that owns the ticket: the routed message's routing key."""
    for delivery in decision.deliveries:
        if delivery.role in ("owner", "primary"):
            return delivery.desk
    return decision.deliveries[0].desk


async def route_message(message: Message, rules: RuleSet) -> tuple[str, Message]:
    """Decide; return (routing key = owning desk, the message with `route` set)."""
    decision = rules.decide(message)
    return owning_desk(decision), message.model_copy(update={"route": decision})


def route_handler(holder: RulesHolder, bus: Publishing) -> Callable[[Message], Awaitable[None]]:
    """The `intake.router` queue handler: route, publish to `intake.routed`, then return (ack).

    A publish that is not confirmed raises (Transient) and the message is redelivered; a
    redelivery is decided again under the rules then in force, which is harmless.
    """
    async def handle(message: Message) -> None:
        desk, routed = await route_message(message, holder.current)
        await bus.publish(ROUTED_EXCHANGE, desk, routed.model_dump_json().encode("utf-8"),
                          headers={"x-intake-route": routed.route.route if routed.route else ""})

    return handle


def route_batch_handler(holder: RulesHolder,
                        bus: Publishing) -> Callable[[list[Message]], Awaitable[None]]:
    """The same for a batch: every message decided and published, confirms awaited together.

    If any publish is not confirmed the batch fails and the bus hands the messages back one by
    one; the ones already published then go out twice, which the ticket core absorbs.
    """
    async def handle(messages: list[Message]) -> None:
        rules = holder.current  # one rules revision for the whole batch
        items: list[tuple[str, bytes, dict[str, Any] | None]] = []
        for message in messages:
            desk, routed = await route_message(message, rules)
            items.append((desk, routed.model_dump_json().encode("utf-8"),
                          {"x-intake-route": routed.route.route if routed.route else ""}))
        await bus.publish_many(ROUTED_EXCHANGE, items)

    return handle
