"""The kernel's bus on the real RabbitMQ: confirms, ack after work, retries, dead letters."""

from __future__ import annotations

import asyncio

import pytest

from intake.bus import Bus, Delivery
from intake.errors import Rejected, StorageUnavailable, Transient
from intake.message import Message
from intake.settings import IntakeSettings
from tests.conftest import delete_topology
from tests.factories import form_message
from tests.support import BrokerProxy, eventually


async def queue_depth(bus: Bus, logical: str) -> int:
    assert bus._connection is not None
    channel = await bus._connection.channel()
    try:
        queue = await channel.declare_queue(bus.names(logical), passive=True)
        return queue.declaration_result.message_count or 0
    finally:
        await channel.close()


async def test_confirmed_publish_is_consumed_and_acked(bus: Bus) -> None:
    seen: list[Message] = []

    async def handler(message: Message) -> None:
        seen.append(message)

    sent = form_message(1)
    await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
    bus.consume("router", handler, Message)
    await eventually(lambda: len(seen) == 1)
    assert seen[0].idempotency_key == sent.idempotency_key
    await bus.stop_consumers()
    assert await queue_depth(bus, "router") == 0


async def test_schema_invalid_message_is_dead_lettered_with_reason(bus: Bus) -> None:
    calls: list[Message] = []

    async def handler(message: Message) -> None:
        calls.append(message)

    await bus.publish("inbound", "webform.contact", b'{"schema_version": 1, "channel": "fax"}')
    bus.consume("router", handler, Message)
    letters = await eventually(lambda: bus.browse_dead())
    assert calls == []
    assert letters[0].reason == "schema_invalid"
    assert "channel" in letters[0].error
    assert letters[0].queue == bus.names("router")
    assert letters[0].exchange == bus.names("inbound")


async def test_rejected_by_handler_goes_to_dead_at_once_with_its_reason(bus: Bus) -> None:
    attempts = 0

    async def handler(message: Message) -> None:
        nonlocal attempts
        attempts += 1
        raise Rejected("desk 'nowhere' does not exist", reason="unknown_desk")

    sent = form_message(2)
    await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
    bus.consume("router", handler, Message)
    letters = await eventually(lambda: bus.browse_dead())
    assert attempts == 1
    assert letters[0].reason == "unknown_desk"
    assert b"webform:contact:2" in letters[0].body


async def test_transient_failure_is_retried_until_it_succeeds(bus: Bus) -> None:
    attempts = 0
    done = asyncio.Event()

    async def handler(message: Message) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise Transient("database restarting")
        done.set()

    sent = form_message(3)
    await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
    bus.consume("router", handler, Message)
    await asyncio.wait_for(done.wait(), 15)
    await bus.stop_consumers()
    assert attempts == 3
    assert await bus.browse_dead() == []


async def test_failure_beyond_the_delivery_limit_is_dead_lettered(bus: Bus) -> None:
    attempts = 0

    async def handler(message: Message) -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("bug in handler")

    sent = form_message(4)
    await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
    bus.consume("router", handler, Message)
    letters = await eventually(lambda: bus.browse_dead(), timeout=20)
    assert attempts == bus.settings.delivery_limit
    assert letters[0].reason == "retries_exhausted"
    assert "bug in handler" in letters[0].error


async def test_replay_brings_a_dead_letter_back_exactly_once(bus: Bus) -> None:
    fail = True
    seen: list[str] = []

    async def handler(message: Message) -> None:
        if fail:
            raise Rejected("poison", reason="poison")
        seen.append(message.idempotency_key)

    sent = form_message(5)
    await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
    bus.consume("router", handler, Message)
    letters = await eventually(lambda: bus.browse_dead())
    fail = False
    replayed = await bus.replay_dead([letters[0].id])
    assert replayed == [letters[0].id]
    await eventually(lambda: seen == [sent.idempotency_key])
    assert await bus.browse_dead() == []
    assert await bus.replay_dead([letters[0].id]) == []
    await asyncio.sleep(0.3)
    assert seen == [sent.idempotency_key]


async def test_unroutable_publish_is_not_confirmed(bus: Bus) -> None:
    assert bus._connection is not None
    channel = await bus._connection.channel()
    queue = await channel.get_queue(bus.names("router"))
    await queue.unbind(bus.names("inbound"), "#")
    await channel.close()
    with pytest.raises(Transient):
        await bus.publish("inbound", "webform.contact", form_message(6).model_dump_json().encode())


async def test_consumer_resumes_after_the_broker_connection_drops(
        settings: IntakeSettings) -> None:
    proxy = BrokerProxy()
    await proxy.start()
    bus = Bus(settings.model_copy(update={"amqp_url": proxy.url}), "test")
    seen: list[str] = []

    async def handler(message: Message) -> None:
        seen.append(message.idempotency_key)

    try:
        await bus.connect(timeout=10)
        bus.consume("router", handler, Message)
        first = form_message("before")
        await bus.publish("inbound", first.routing_key, first.model_dump_json().encode())
        await eventually(lambda: len(seen) == 1)
        await proxy.stop()  # the broker "goes away"
        await eventually(lambda: not bus.connected)
        await proxy.start()  # and comes back on the same port
        assert await bus.wait_connected(20)
        second = form_message("after")
        await bus.publish("inbound", second.routing_key, second.model_dump_json().encode())
        await eventually(lambda: "webform:contact:after" in seen, timeout=15)
    finally:
        await delete_topology(bus)
        await bus.close()
        await proxy.stop()


async def test_close_finishes_in_flight_work_and_acks_it(settings: IntakeSettings) -> None:
    bus = Bus(settings, "test")
    await bus.connect()
    started = asyncio.Event()
    finished: list[str] = []

    async def slow_handler(message: Message) -> None:
        started.set()
        await asyncio.sleep(0.5)
        finished.append(message.idempotency_key)

    sent = form_message("slow")
    await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
    bus.consume("router", slow_handler, Message)
    await asyncio.wait_for(started.wait(), 10)
    await bus.close()  # what SIGTERM does: stop taking, finish what is in hand
    assert finished == ["webform:contact:slow"]

    check = Bus(settings, "check")
    await check.connect()
    try:
        assert await queue_depth(check, "router") == 0  # acked, not redelivered
    finally:
        await delete_topology(check)
        await check.close()


async def test_batches_are_handled_together_and_a_poison_message_alone(bus: Bus) -> None:
    batches: list[list[str]] = []
    stored: list[str] = []

    async def handler(messages: list[Message]) -> None:
        keys = [m.idempotency_key for m in messages]
        batches.append(keys)
        if "webform:contact:poison" in keys:
            raise Rejected("cannot be persisted", reason="poison")
        stored.extend(keys)

    sent = [form_message(f"b{i:02d}") for i in range(30)]
    sent.insert(17, form_message("poison"))
    for message in sent:  # all queued before the consumer starts, so batches fill up
        await bus.publish("inbound", message.routing_key, message.model_dump_json().encode())
    bus.consume_batches("router", handler, Message, max_batch=10, max_wait_s=0.01)
    letters = await eventually(lambda: bus.browse_dead())
    await eventually(lambda: len(stored) == 30)
    assert [letter.reason for letter in letters] == ["poison"]
    assert b"webform:contact:poison" in letters[0].body
    assert max(len(b) for b in batches) == 10  # messages really were handled together
    assert stored == [m.idempotency_key for m in sent if "poison" not in m.idempotency_key]
    await bus.stop_consumers()
    assert await queue_depth(bus, "router") == 0


async def test_a_database_outage_holds_messages_instead_of_spending_the_delivery_limit(
        bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    import intake.bus.consumer

    monkeypatch.setattr(intake.bus.consumer, "HOLD_FIRST_RETRY_S", 0.01)
    attempts = 0
    stored: list[str] = []

    async def handler(messages: list[Message]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= bus.settings.delivery_limit + 2:  # longer than redeliveries could last
            raise StorageUnavailable("database restarting")
        stored.extend(m.idempotency_key for m in messages)

    sent = form_message("held")
    await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
    bus.consume_batches("router", handler, Message, max_batch=10)
    await eventually(lambda: stored == ["webform:contact:held"], timeout=30)
    assert await bus.browse_dead() == []
    await bus.stop_consumers()
    assert await queue_depth(bus, "router") == 0


async def test_several_broker_urls_are_tried_in_turn(settings: IntakeSettings) -> None:
    dead = BrokerProxy()
    await dead.reserve_port()  # a cluster node that is down
    urls = f"{dead.url},amqp://guest:guest@127.0.0.1:5672/"
    bus = Bus(settings.model_copy(update={"amqp_url": urls}), "test")
    try:
        await bus.connect(timeout=20)
        sent = form_message("cluster")
        await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
        assert await queue_depth(bus, "router") == 1
    finally:
        await delete_topology(bus)
        await bus.close()


async def test_pipelined_batches_overlap_but_settle_in_order(bus: Bus) -> None:
    """With pipeline=3 a slow batch does not hold up the next one's work, only its ack."""
    started: list[str] = []
    finished: list[str] = []
    running = 0
    overlapped = 0

    later_finished = asyncio.Event()

    async def handler(messages: list[Message]) -> None:
        nonlocal running, overlapped
        running += 1
        overlapped = max(overlapped, running)
        started.extend(m.idempotency_key for m in messages)
        # The first batch is the slowest: later ones finish first but must wait to be acked.
        if messages[0].idempotency_key.endswith(":p0"):
            await asyncio.wait_for(later_finished.wait(), 20)
        else:
            await asyncio.sleep(0.01)
            later_finished.set()
        finished.extend(m.idempotency_key for m in messages)
        running -= 1

    sent = [form_message(f"p{i}") for i in range(40)]
    for message in sent:
        await bus.publish("inbound", message.routing_key, message.model_dump_json().encode())
    bus.consume_batches("router", handler, Message, max_batch=5, max_wait_s=0, pipeline=3)
    await eventually(lambda: len(finished) == 40)
    await bus.stop_consumers()
    assert started == [m.idempotency_key for m in sent]  # handlers start in arrival order
    assert overlapped > 1  # batches really were under way together
    assert finished != started  # the slow first batch finished after later ones
    assert await queue_depth(bus, "router") == 0  # every message acked once all settled
    assert await bus.browse_dead() == []


async def test_a_lone_message_does_not_wait_for_company(bus: Bus) -> None:
    batches: list[int] = []

    async def handler(messages: list[Message]) -> None:
        batches.append(len(messages))

    # A batch may wait an hour for company under load; a lone message does not wait at all.
    bus.consume_batches("router", handler, Message, max_batch=10, max_wait_s=3600)
    assert await bus.supervisor.wait_up("consumer:router", 15)
    sent = form_message("lone")
    await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
    await eventually(lambda: batches == [1])
    await bus.stop_consumers()


async def test_at_a_moderate_rate_pipelined_batches_gather_instead_of_overlapping(
        bus: Bus) -> None:
    """A trickle does not start a batch per message: it joins the batch after the one under
    way (fewer acks and writes); only a queue of PIPELINE_MIN makes batches overlap."""
    import intake.bus.consumer

    batches: list[list[str]] = []
    release = asyncio.Event()

    async def handler(messages: list[Message]) -> None:
        batches.append([m.idempotency_key for m in messages])
        if len(batches) == 1:
            await asyncio.wait_for(release.wait(), 20)

    spec = bus.consume_batches("router", handler, Message, max_batch=50, max_wait_s=0,
                               pipeline=4)
    assert await bus.supervisor.wait_up("consumer:router", 15)
    first = form_message("t-first")
    await bus.publish("inbound", first.routing_key, first.model_dump_json().encode())
    await eventually(lambda: len(batches) == 1)
    # Fewer than PIPELINE_MIN arrive while the first batch is under way.
    trickle = [form_message(f"t{i:02d}") for i in range(intake.bus.consumer.PIPELINE_MIN - 6)]
    for message in trickle:
        await bus.publish("inbound", message.routing_key, message.model_dump_json().encode())
    await eventually(lambda: len(spec.buffer) == len(trickle))
    release.set()
    await eventually(lambda: sum(map(len, batches)) == 1 + len(trickle))
    await bus.stop_consumers()
    # They waited for the batch under way and then went as one batch, not one each.
    assert batches == [[first.idempotency_key], [m.idempotency_key for m in trickle]]
    assert await queue_depth(bus, "router") == 0


async def test_acks_of_small_batches_go_out_together(
        bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trickle makes batches of one; their acks still leave as a few `multiple` acks."""
    import intake.bus.settle

    monkeypatch.setattr(intake.bus.settle, "ACK_DELAY_S", 30)  # only a stop sends them
    acks: list[bool] = []
    ack = Delivery.ack

    async def counting(self: Delivery, multiple: bool = False) -> None:
        acks.append(multiple)
        await ack(self, multiple=multiple)

    monkeypatch.setattr(Delivery, "ack", counting)
    batches: list[int] = []

    async def handler(messages: list[Message]) -> None:
        batches.append(len(messages))

    bus.consume_batches("router", handler, Message, max_batch=10, max_wait_s=0)
    sent = [form_message(f"a{i}") for i in range(20)]
    for number, message in enumerate(sent, 1):  # each handled before the next: a batch each
        await bus.publish("inbound", message.routing_key, message.model_dump_json().encode())
        await eventually(lambda n=number: sum(batches) == n)  # type: ignore[misc]
    assert batches == [1] * 20
    assert acks == []  # none sent one by one
    await bus.stop_consumers()  # sends the acks still pending
    assert acks == [True]  # twenty batches, one `multiple` ack
    assert await queue_depth(bus, "router") == 0  # every one of them acked


async def test_a_message_whose_ack_was_pending_when_the_connection_broke_comes_again(
        settings: IntakeSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    import intake.bus.settle

    monkeypatch.setattr(intake.bus.settle, "ACK_DELAY_S", 30)  # not sent before the break
    proxy = BrokerProxy()
    await proxy.start()
    bus = Bus(settings.model_copy(update={"amqp_url": proxy.url}), "test")
    seen: list[str] = []

    async def handler(messages: list[Message]) -> None:
        seen.extend(m.idempotency_key for m in messages)

    try:
        await bus.connect(timeout=10)
        bus.consume_batches("router", handler, Message, max_batch=10)
        sent = form_message("pending-ack")
        await bus.publish("inbound", sent.routing_key, sent.model_dump_json().encode())
        await eventually(lambda: seen == [sent.idempotency_key])
        await proxy.stop()  # the connection breaks with the ack still waiting
        await proxy.start()
        # The bus reconnects and the broker delivers the message again: a harmless duplicate.
        await eventually(lambda: seen == [sent.idempotency_key] * 2, timeout=30)
        monkeypatch.setattr(intake.bus.settle, "ACK_DELAY_S", 0.005)
    finally:
        await bus.stop_consumers()  # sends the pending ack at once, not in 30 s
        assert await queue_depth(bus, "router") == 0
        await delete_topology(bus)
        await bus.close()
        await proxy.stop()
