"""The router's consumer: an inbound message in, the same message stamped with its route out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
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
    """Decide; return (routing key = owning desk, the message with `route` set)."""
    [routed] = await route_messages([message], rules, directory)
    return routed


async def route_messages(messages: Sequence[Message], rules: RuleSet,
                         directory: CustomerDirectory | None = None,
                         ) -> list[tuple[str, Message]]:
    """Decide each message; return (routing key = owning desk, the message with `route` set).

    The sender is looked up (`directory`) only for a message whose decision reads
    `customer.*`: one that reaches, before or at its match, a route reading the customer
    (`RuleSet.decide_unless_customer`); every other message is decided with the lookup
    `skipped`. The lookups a batch needs run together: one bound for all, not one each.
    Without a directory (offline, tests) the lookup is `skipped`, every attribute null, and
    the record says so.
    """
    decisions: list[RouteDecision | None]
    if rules.reads_customer and directory is not None:
        decisions = [rules.decide_unless_customer(message) for message in messages]
        options = rules.config.options.customer_lookup
        waiting: list[int] = []
        for i, decision in enumerate(decisions):
            if decision is not None:
                count_lookup("skipped")
                continue
            known = directory.known(messages[i], options)  # a warm cache: no task, no await
            if known is None:
                waiting.append(i)
                continue
            count_lookup(known[1])
            decisions[i] = rules.decide(messages[i], known[0], lookup=known[1])
        found = await asyncio.gather(*(directory.find(messages[i], options) for i in waiting))
        for i, (customer, lookup) in zip(waiting, found, strict=True):
            count_lookup(lookup)
            decisions[i] = rules.decide(messages[i], customer, lookup=lookup)
    else:
        if rules.reads_customer:
            for _ in messages:
                count_lookup("skipped")
        decisions = [rules.decide(message, None, lookup="skipped") for message in messages]
    routed: list[tuple[str, Message]] = []
    for message, decision in zip(messages, decisions, strict=True):
        assert decision is not None
        count_decision(decision.route)
        routed.append((owning_desk(decision),
                       message.model_copy(update={"route": decision})))
    return routed


async def decide_in_full(message: Message, rules: RuleSet,
                         directory: CustomerDirectory | None) -> RouteDecision:
    """The decision `/explain` and `intake route explain` show for a message given without a
    customer snapshot: every route with `saw`, the sender looked up as the router does (only
    when the decision reads `customer.*`; without a directory the lookup is `skipped`)."""
    if directory is None or not rules.reads_customer \
            or rules.decide_unless_customer(message) is not None:
        return rules.decide(message, None, max_tried=None, lookup="skipped")
    customer, lookup = await directory.find(message, rules.config.options.customer_lookup)
    return rules.decide(message, customer, max_tried=None, lookup=lookup)


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
        for desk, routed in await route_messages(messages, rules, directory):
            items.append((desk, routed.model_dump_json().encode("utf-8"),
                          {"x-intake-route": routed.route.route if routed.route else ""}))
        await bus.publish_many(ROUTED_EXCHANGE, items)

    return handle
