"""The consumer: a message in, published to `intake.routed` under its owning desk, stamped."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from intake.message import Message
from router.consume import route_batch_handler, route_message
from router.reload import RulesHolder

from .conftest import RulesFrom, make_message

COMPLAINTS = """\
- id: complaints
  match:
    where: [{field: form.fields.topic, equals: complaint}]
  desk: aftersales
  priority: high
- id: shared
  match: {channel: email}
  mode: primary_secondary
  deliveries:
    - {desk: general, role: collaborator}
    - {desk: sales}
"""


class RecordingBus:
    def __init__(self) -> None:
        self.published: list[tuple[str, str, bytes, dict[str, str] | None]] = []

    async def publish(self, exchange: str, routing_key: str, body: bytes,
                      headers: dict[str, str] | None = None) -> None:
        self.published.append((exchange, routing_key, body, headers))

    async def publish_many(self, exchange: str,
                           items: Iterable[tuple[str, bytes, dict[str, Any] | None]],
                           ) -> None:
        for routing_key, body, headers in items:
            await self.publish(exchange, routing_key, body, headers)


async def test_route_message_keys_by_owning_desk(rules_from: RulesFrom) -> None:
    rules = rules_from(COMPLAINTS)
    message = make_message()
    desk, routed = await route_message(message, rules)
    assert desk == "aftersales"
    assert routed.route is not None and routed.route.route == "complaints"
    assert routed.id == message.id and message.route is None  # the input is left alone


async def test_primary_desk_is_the_routing_key(rules_from: RulesFrom) -> None:
    rules = rules_from(COMPLAINTS)
    email = make_message(channel="email", idempotency_key="email:a:b", form=None)
    desk, routed = await route_message(email, rules)
    assert desk == "sales"
    assert routed.route is not None and routed.route.mode == "primary_secondary"


async def test_handler_publishes_the_stamped_message(write_rules: Callable[..., Path]) -> None:
    holder = RulesHolder(write_rules(COMPLAINTS))
    holder.load()
    bus = RecordingBus()
    await route_batch_handler(holder, bus)([make_message()])
    ((exchange, key, body, headers),) = bus.published
    assert (exchange, key, headers) == ("routed", "aftersales", {"x-intake-route": "complaints"})
    routed = Message.model_validate_json(body)
    assert routed.route is not None
    assert routed.route.revision == holder.current.revision
    assert routed.route.priority == "high"


async def test_batch_handler_publishes_each_message_with_its_desk(
        write_rules: Callable[..., Path]) -> None:
    holder = RulesHolder(write_rules(COMPLAINTS))
    holder.load()
    bus = RecordingBus()
    email = make_message(channel="email", idempotency_key="email:a:b", form=None)
    await route_batch_handler(holder, bus)([make_message(), email])
    assert [(e, k) for e, k, _, _ in bus.published] == [("routed", "aftersales"),
                                                       ("routed", "sales")]
    keys = [Message.model_validate_json(body).idempotency_key for _, _, body, _ in bus.published]
    assert keys[1] == "email:a:b"
