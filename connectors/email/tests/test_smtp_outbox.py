"""`250` only once durable, with the kernel's real publisher: the broker down (nothing listens
on its port) still gives `250` from the fsynced outbox, and the mail waits there; the broker
down and the outbox unwritable gives `451 4.3.0` and nothing kept."""

from __future__ import annotations

import json
import smtplib
import socket
from pathlib import Path

from connectors.email.inbound import Deliverer, ParserPool
from connectors.email.inbound.smtp import start_server
from connectors.email.settings import EmailSettings
from intake import IntakeSettings
from intake.bus import Bus
from intake.outbox import Outbox, Publisher
from intake.testing import MemoryBlobStore

from .test_smtp import MAIL, Listener, accounts


def refused_url() -> str:
    with socket.socket() as probe:  # a port nobody listens on: every connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"amqp://guest:guest@127.0.0.1:{port}/"


async def listener_with(publisher: Publisher) -> Listener:
    own = EmailSettings(parse_workers=0)
    deliverer = Deliverer(publisher, MemoryBlobStore(), accounts(), own,
                          ParserPool(own.parse_workers, own.parse_timeout_s))
    return Listener(deliverer, await start_server(deliverer, "127.0.0.1", 0))


def send(client: smtplib.SMTP) -> tuple[int, bytes]:
    client.ehlo()
    client.mail("li@example.cn")
    client.rcpt("support@shop.example")
    return client.data(MAIL)


async def test_broker_down_gives_250_from_the_outbox(tmp_path: Path) -> None:
    bus = Bus(IntakeSettings(amqp_url=refused_url()), "email")
    bus.start()
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    listener = await listener_with(Publisher(bus, outbox, "email", "email"))
    try:
        code, text = await listener.client(send)
        assert code == 250 and text.startswith(b"2.0.0"), text
        [entry] = await outbox.peek()
        assert entry.routing_key == "email.support@shop.example"
        assert json.loads(entry.body)["subject"] == "退货申请"
    finally:
        listener.server.close()
        await listener.server.wait_closed()
        await bus.close()
        outbox.close()


async def test_broker_down_and_outbox_unwritable_gives_451(tmp_path: Path) -> None:
    bus = Bus(IntakeSettings(amqp_url=refused_url()), "email")
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    outbox.close()  # a closed database stands for a disk that refuses writes
    listener = await listener_with(Publisher(bus, outbox, "email", "email"))
    try:
        code, text = await listener.client(send)
        assert code == 451 and text.startswith(b"4.3.0"), text
    finally:
        listener.server.close()
        await listener.server.wait_closed()
