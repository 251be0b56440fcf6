"""Retries counted by the gateway (x-intake-attempt) on quorum and classic queues, unroutables."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from intake import amqp
from intake.bus import ATTEMPT_HEADER, Bus
from intake.errors import BrokerUnavailable, Transient, Unroutable
from intake.message import Message
from intake.settings import IntakeSettings
from tests.factories import form_message
from tests.support import eventually


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    import intake.bus.settle

    monkeypatch.setattr(intake.bus.settle, "RETRY_FIRST_DELAY_S", 0.01)


async def make_classic(bus: Bus, logical: str, exchange: str) -> None:
    """The queue exists as a classic queue (an older deployment's): the bus uses it as it is."""
    assert bus._connection is not None
    channel = await bus._connection.channel()
    await channel.queue_delete(bus.names(logical))
    queue = await channel.declare_queue(bus.names(logical), durable=True,
                                        arguments={"x-queue-type": "classic"})
    await queue.bind(bus.names(exchange), "#")
    await channel.close()


async def queue_type(bus: Bus, logical: str) -> str:
    """The type the broker reports, from a passive declare with the wrong type (refused)."""
    assert bus._connection is not None
    channel = await bus._connection.channel()
    try:
        await channel.declare_queue(bus.names(logical), durable=True,
                                    arguments={"x-queue-type": "stream"})
    except Exception as exc:  # "inequivalent arg 'x-queue-type' ... current is 'classic'"
        return str(exc).rsplit("current is", 1)[-1].strip(" '\")")
    await channel.close()
    return "stream"


@pytest.mark.parametrize("kind", ["quorum", "classic"])
async def test_a_transient_failure_is_tried_exactly_the_limit_then_dead_lettered(
        bus: Bus, kind: str) -> None:
    if kind == "classic":
        await make_classic(bus, "router", "inbound")
        assert await queue_type(bus, "router") == "classic"
    attempts: list[int] = []

    async def handler(message: Message) -> None:
        attempts.append(len(attempts) + 1)
        raise Transient("the desk service is restarting")

    sent = form_message(f"retried-{kind}")
    await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
    bus.consume("router", handler, Message)
    letters = await eventually(lambda: bus.browse_dead(), timeout=30)
    await asyncio.sleep(0.3)  # nothing more comes after the dead letter
    assert len(attempts) == bus.settings.delivery_limit
    assert [letter.reason for letter in letters] == ["retries_exhausted"]
    letter = letters[0]
    assert "the desk service is restarting" in letter.error
    # The letter names where the message first came from, so a replay goes back there.
    assert letter.exchange == bus.names("inbound")
    assert letter.routing_key == sent.routing_key
    assert letter.queue == bus.names("router")


@pytest.mark.parametrize("kind", ["quorum", "classic"])
async def test_a_batch_message_failing_transiently_is_retried_to_the_limit(
        bus: Bus, kind: str) -> None:
    if kind == "classic":
        await make_classic(bus, "ticket_core", "routed")
    calls: dict[str, int] = {}

    async def handler(messages: list[Message]) -> None:
        for message in messages:
            calls[message.idempotency_key] = calls.get(message.idempotency_key, 0) + 1
        if any("bad" in m.idempotency_key for m in messages):
            raise Transient("constraint conflict")

    sent = [form_message("good-1"), form_message("bad"), form_message("good-2")]
    for message in sent:
        await bus.publish("routed", "support", message.model_dump_json().encode())
    bus.consume_batches("ticket_core", handler, Message, max_batch=10)
    letters = await eventually(lambda: bus.browse_dead(), timeout=30)
    await eventually(lambda: calls.get("webform:contact:good-2", 0) >= 1)
    assert [letter.reason for letter in letters] == ["retries_exhausted"]
    assert b"webform:contact:bad" in letters[0].body
    # The bad one: its first try inside the batch, then the limit's attempts alone.
    assert calls["webform:contact:bad"] == bus.settings.delivery_limit + 1


async def test_the_attempt_travels_in_a_header_the_gateway_writes(bus: Bus) -> None:
    headers_seen: list[Any] = []
    done = asyncio.Event()
    original = Bus._handle

    async def recording(self: Bus, spec: Any, incoming: Any) -> None:
        headers_seen.append(incoming.headers.get(ATTEMPT_HEADER))
        await original(self, spec, incoming)

    fails = 2

    async def handler(message: Message) -> None:
        nonlocal fails
        if fails:
            fails -= 1
            raise Transient("not yet")
        done.set()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Bus, "_handle", recording)
        sent = form_message("attempts")
        await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
        bus.consume("router", handler, Message)
        await asyncio.wait_for(done.wait(), 20)
    assert headers_seen == [None, 2, 3]
    assert await bus.browse_dead() == []


@pytest.mark.parametrize("path", ["lean", "stock"])
async def test_publish_and_publish_many_raise_unroutable_when_nothing_is_bound(
        bus: Bus, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    if path == "stock":
        monkeypatch.setattr(amqp, "start_publish", lambda *args, **kwargs: None)
    # intake.outbound has no queue bound for this channel: the broker returns the message.
    body = form_message("nowhere").model_dump_json().encode()
    with pytest.raises(Unroutable):
        await bus.publish("outbound", "fax.nowhere", body)
    with pytest.raises(Unroutable):
        await bus.publish_many("outbound", [("fax.nowhere", body, None)])
    with pytest.raises(Unroutable):  # one unroutable among routable ones fails the lot
        await bus.publish_many("inbound", [("webform.contact", body, None),
                                           ("webform.contact", body, None)])
        await bus.publish_many("outbound", [("fax.a", body, None), ("fax.b", body, None)])
    # Without `mandatory` (intake.events) nobody listening is fine.
    await bus.publish("events", "ticket.created.support", body, mandatory=False)
    await bus.publish_many("events", [("ticket.created.support", body, None)] * 3,
                           mandatory=False)


async def test_a_republish_that_routes_nowhere_fails_the_handler_and_ends_dead_lettered(
        bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    """The router's case: its publish to intake.routed comes back, it is not dropped."""
    import intake.bus.consumer

    monkeypatch.setattr(intake.bus.consumer, "UNROUTABLE_HOLD_S", 0)  # straight to attempts
    assert bus._connection is not None
    channel = await bus._connection.channel()
    await channel.queue_delete(bus.names("ticket_core"))  # nothing bound to intake.routed
    await channel.close()
    tries = 0

    async def route(messages: list[Message]) -> None:
        nonlocal tries
        tries += 1
        await bus.publish_many("routed", [("support", m.model_dump_json().encode(), None)
                                          for m in messages])

    sent = form_message("unroutable")
    await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
    bus.consume_batches("router", route, Message, max_batch=10)
    letters = await eventually(lambda: bus.browse_dead(), timeout=30)
    assert tries == bus.settings.delivery_limit
    assert letters[0].reason == "retries_exhausted"
    assert "unroutable" in letters[0].error
    assert letters[0].exchange == bus.names("inbound")


async def test_a_batch_failing_because_the_broker_went_away_is_given_back_whole(
        bus: Bus) -> None:
    calls: list[int] = []
    underlays: list[Any] = []  # the consumer's AMQP channel at each call
    stored: list[str] = []

    async def handler(messages: list[Message]) -> None:
        calls.append(len(messages))
        underlays.append(bus._consumers[0].underlay)
        if len(calls) == 1:
            spec = bus._consumers[0]
            assert spec.underlay is not None
            await spec.underlay.basic_ack(999_999)  # the broker closes the consumer's channel
            await eventually(lambda: spec.underlay is not None and spec.underlay.is_closed)
            raise BrokerUnavailable("channel closed under the batch")
        stored.extend(m.idempotency_key for m in messages)

    sent = [form_message(f"gone-{i}") for i in range(5)]
    for message in sent:
        await bus.publish("inbound", message.routing_key, message.model_dump_json().encode())
    bus.consume_batches("router", handler, Message, max_batch=10, max_wait_s=0.05)
    await eventually(lambda: sorted(set(stored)) == sorted(m.idempotency_key for m in sent),
                     timeout=20)
    # Not retried one by one on the dead channel: every later call came from the new one,
    # once the broker had delivered the batch again.
    assert underlays.count(underlays[0]) == 1
    assert await bus.browse_dead() == []


async def test_an_ignored_message_is_acked_and_counted_not_retried(bus: Bus) -> None:
    from intake.errors import Ignored
    from intake.metrics import IGNORED

    before = IGNORED.labels(bus.service, "", "menu_click")._value.get()
    calls: list[str] = []

    async def handler(message: Message) -> None:
        calls.append(message.idempotency_key)
        raise Ignored("a menu click", reason="menu_click")

    sent = form_message("ignored-1")
    await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
    bus.consume("router", handler, Message)
    await eventually(lambda: IGNORED.labels(bus.service, "", "menu_click")._value.get() > before,
                     timeout=15)
    await asyncio.sleep(0.3)  # acked: nothing comes again, nothing is dead-lettered
    assert calls == [sent.idempotency_key]
    assert await bus.browse_dead() == []


async def test_an_unsupported_message_is_kept_in_the_dead_letters_at_once(bus: Bus) -> None:
    from intake.errors import Unsupported

    calls: list[str] = []

    async def handler(message: Message) -> None:
        calls.append(message.idempotency_key)
        raise Unsupported("an event type never seen")

    sent = form_message("unsupported-1")
    await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
    bus.consume("router", handler, Message)
    letters = await eventually(lambda: bus.browse_dead(), timeout=15)
    assert calls == [sent.idempotency_key]  # not retried: it would fail the same way
    assert [letter.reason for letter in letters] == ["unsupported_event"]


async def test_a_republish_held_while_its_queue_is_declared_again_is_delivered(
        bus: Bus) -> None:
    """A consumer recovering from `delete_queue` declares its queue again in a moment: the
    router holds what it could not route meanwhile instead of spending its attempts."""
    assert bus._connection is not None
    channel = await bus._connection.channel()
    await channel.queue_delete(bus.names("ticket_core"))  # nothing bound to intake.routed
    tries = 0

    async def route(messages: list[Message]) -> None:
        nonlocal tries
        tries += 1
        await bus.publish_many("routed", [("support", m.model_dump_json().encode(), None)
                                          for m in messages])

    sent = form_message("held-unroutable")
    await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
    bus.consume_batches("router", route, Message, max_batch=10)
    await eventually(lambda: tries >= bus.settings.delivery_limit + 1, timeout=30)
    # More tries than the attempts allow, and still no dead letter: it is being held.
    assert await bus.browse_dead() == []
    queue = await channel.declare_queue(bus.names("ticket_core"), durable=True,
                                        arguments={"x-queue-type": "quorum"})
    await queue.bind(bus.names("routed"), "#")
    arrived = await eventually(lambda: queue.get(no_ack=True, fail=False), timeout=30)
    assert Message.model_validate_json(arrived.body).idempotency_key == sent.idempotency_key
    assert await bus.browse_dead() == []
    await channel.close()


async def test_a_publish_the_broker_refuses_is_held_not_requeued(
        settings: IntakeSettings) -> None:
    """A quorum queue between leaders (its node killed) or full nacks publishes on a live
    connection: the router holds the message it is routing and publishes it again. Requeued
    instead, it would come straight back and spend the queue's delivery limit in seconds."""
    from tests.conftest import delete_topology

    # Attempt limit 1: the router queue's own limit is 3 deliveries, so more tries than that
    # without a dead letter can only mean the message was held, not redelivered.
    bus = Bus(settings.model_copy(update={"delivery_limit": 1}), "test")
    await bus.connect(timeout=15)
    try:
        assert bus._connection is not None
        channel = await bus._connection.channel()
        await channel.queue_delete(bus.names("ticket_core"))
        full = await channel.declare_queue(
            bus.names("ticket_core"), durable=True,
            arguments={"x-queue-type": "quorum", "x-max-length": 1,
                       "x-overflow": "reject-publish"})
        await full.bind(bus.names("routed"), "#")
        # A quorum queue refuses once it holds more than its limit: two make it full.
        fillers = [form_message(f"filler-{n}") for n in range(2)]
        for filler in fillers:
            await bus.publish("routed", "support", filler.model_dump_json().encode())
        tries = 0

        async def route(messages: list[Message]) -> None:
            nonlocal tries
            tries += 1
            await bus.publish_many("routed", [("support", m.model_dump_json().encode(), None)
                                              for m in messages])

        sent = form_message("held-refused")
        await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
        bus.consume_batches("router", route, Message, max_batch=10)
        await eventually(lambda: tries >= 5, timeout=30)
        assert await bus.browse_dead() == []
        for filler in fillers:  # room again: the held publish goes through
            taken = await full.get(no_ack=True)
            assert (Message.model_validate_json(taken.body).idempotency_key
                    == filler.idempotency_key)
        arrived = await eventually(lambda: full.get(no_ack=True, fail=False), timeout=30)
        assert Message.model_validate_json(arrived.body).idempotency_key == sent.idempotency_key
        await asyncio.sleep(0.3)  # acked once: not routed a second time
        assert await full.get(no_ack=True, fail=False) is None
        assert await bus.browse_dead() == []
        await channel.close()
    finally:
        await delete_topology(bus)
        await bus.close()
