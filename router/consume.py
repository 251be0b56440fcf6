"""The router's consumer: an inbound message in, the same message stamped with its route out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from intake.message import Message, RouteDecision

from .lookup import CustomerDirectory
from .metrics import count_decision, count_lookup
from .reload import RulesHolder
from .rules import RuleSet

ROUTED_EXCHANGE = "routed"


class Publishing(Protocol):
    """The part of `intake.bus.Bus` the router uses."""

    async def publish_many(self, exchange: str,
                           items: Iterable[tuple[str, bytes, dict[str, Any] | None]],
                           ) -> None: ...


def owning_desk(decision: RouteDecision) -> str:
    """The desk that owns the ticket: the routed message's routing key."""
    for delivery in decision.deliveries:
        if delivery.role in ("owner", "primary"):
            return delivery.desk
    return decision.deliveries[0].desk


async def route_message(message: Message, rules: RuleSet,
                        directory: CustomerDirectory | None = None) -> tuple[str, Message]:
    """Decide; return (routing key = owning desk, the message with `route` set).

    Only when the rules read `customer.*` is the sender looked up (`directory`); without a
    directory (offline, tests) the lookup is `skipped`, every attribute null, and the record
    says so.
    """
    customer, lookup = None, "skipped"
    if rules.reads_customer:
        customer, lookup = (await directory.find(message, rules.config.options.customer_lookup)
                            if directory is not None else (None, "skipped"))
        count_lookup(lookup)
    decision = rules.decide(message, customer, lookup=lookup)
    count_decision(decision.route)
    return owning_desk(decision), message.model_copy(update={"route": decision})


def route_batch_handler(holder: RulesHolder, bus: Publishing,
                        directory: CustomerDirectory | None = None,
                        ) -> Callable[[list[Message]], Awaitable[None]]:
    """The `intake.router` queue handler: each message decided and published to `intake.routed`
    under its owning desk, confirms awaited together; the bus acks the batch once it returns.

    If any publish is not confirmed the batch fails and the bus hands the messages back one by
    one; the ones already published then go out twice, which the ticket core absorbs. A
    redelivery is decided again under the rules then in force, which is harmless.
    """
    async def handle(messages: list[Message]) -> None:
        rules = holder.current  # one rules revision for the whole batch
        items: list[tuple[str, bytes, dict[str, Any] | None]] = []
        if rules.reads_customer and directory is not None and len(messages) > 1:
            # The batch's lookups run together: one bound for all of them, not one each.
            routed_all = await asyncio.gather(
                *(route_message(message, rules, directory) for message in messages))
        else:
            routed_all = [await route_message(message, rules, directory) for message in messages]
        for desk, routed in routed_all:
            items.append((desk, routed.model_dump_json().encode("utf-8"),
                          {"x-intake-route": routed.route.route if routed.route else ""}))
        await bus.publish_many(ROUTED_EXCHANGE, items)

    return handle
