"""The consumer: a message in, published to `intake.routed` under its owning desk, stamped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from intake.message import Message
from router.consume import route_handler, route_message
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
    await route_handler(holder, bus)(make_message())
    ((exchange, key, body, headers),) = bus.published
    assert (exchange, key, headers) == ("routed", "aftersales", {"x-intake-route": "complaints"})
    routed = Message.model_validate_json(body)
    assert routed.route is not None
    assert routed.route.revision == holder.current.revision
    assert routed.route.priority == "high"
