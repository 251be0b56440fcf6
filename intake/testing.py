"""The connector contract suite and the in-memory parts fast tests use.

A connector's `tests/test_contract.py` subclasses `ConnectorContract`, names its `channel` and
its example config, and feeds it fixtures: an HTTP connector implements `send_fixture` (one
request per fixture); any other implements `submit`, calling the entry point its transport
calls (an SMTP handler's `handle_DATA`, a frame parser) with the edge's in-memory publisher,
blob store and accounts. A connector with a sender also subclasses `SenderContract`
(intake.sender_contract). Anything about routing keys, quorum queues or dead letters is tested
on the real broker instead (`tests/integration/`).
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from .blobs import BlobTooLarge, StoredBlob, blob_ref
from .channel import Channel
from .config import load_document
from .errors import BrokerUnavailable, Rejected, Transient
from .message import DeliveryResult, Identity, Message, OutboundMessage
from .sending import SenderRunner
from .service import ACCOUNTS, BLOBS, PUBLISHER, SERVICE_SETTINGS, Service
from .settings import IntakeSettings
from .state import StateStore

VOLATILE = {"id": "<id>", "received_at": "<received_at>", "trace_id": "<trace_id>"}


# Headless Chromium for the pages people see (the web form, the SDK's widget, the rating page):
# Debian's package, driven by the `playwright` library (never its own browser download).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def require_browser() -> Any:
    """playwright's `async_playwright`, or the test skipped with the reason (a failure under
    CI=true, where `make test` installed both)."""
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium)"
    else:
        try:
            from playwright.async_api import async_playwright
        except ImportError:
            reason = "the playwright package is not installed"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return async_playwright


class RecordingPublisher:
    """Takes what an edge publishes and keeps it, as a confirmed broker would."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def publish(self, message: Message, exchange: str = "inbound", *,
                      timeout: float | None = None) -> None:
        """As `Publisher.publish`, `timeout` included (a connector with a deadline passes it)."""
        Message.model_validate_json(message.model_dump_json())  # what the bus would carry
        self.messages.append(message)


class RefusingPublisher(RecordingPublisher):
    """Neither the broker nor the outbox takes anything."""

    async def publish(self, message: Message, exchange: str = "inbound", *,
                      timeout: float | None = None) -> None:
        raise Transient("broker down and outbox unwritable", reason="outbox_unwritable")


class MemoryBlobStore:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    async def put(self, data: bytes, ref: str | None = None) -> str:
        actual = blob_ref(data)
        if ref is not None and ref != actual:  # a connector's bug the contract should catch
            raise ValueError(f"put() was given {ref} for content that is {actual}")
        self.blobs[actual] = data
        return actual

    async def put_stream(self, chunks: AsyncIterable[bytes], *,
                         max_bytes: int | None = None) -> StoredBlob:
        data = bytearray()
        async for chunk in chunks:
            data.extend(chunk)
            if max_bytes is not None and len(data) > max_bytes:
                raise BlobTooLarge(f"the blob is over {max_bytes} bytes")
        return StoredBlob(await self.put(bytes(data)), len(data))

    async def get(self, ref: str) -> bytes:
        return self.blobs[ref]

    async def exists(self, ref: str) -> bool:
        return ref in self.blobs


def comparable(message: Message | dict[str, Any]) -> dict[str, Any]:
    """The message as the bus carries it, with the parts that change per run fixed."""
    data = dict(message) if isinstance(message, dict) else json.loads(message.model_dump_json())
    for key, placeholder in VOLATILE.items():
        if data.get(key) is not None:
            data[key] = placeholder
    return data


async def connector_client(channel: Channel, config: Path, publisher: Any,
                           blobs: Any | None = None) -> TestClient[Any, Any]:
    """The connector's routes on a test server, with in-memory publisher and blob store."""
    edge = await ContractEdge.start(channel, config, publisher, blobs)
    return edge.client


@dataclass
class ContractEdge:
    """What a connector's edge works with in the contract suite, all in memory.

    `client` serves the connector's HTTP routes (and `/healthz`, `/readyz`, `/metrics`);
    a non-HTTP edge uses `publisher`, `blobs`, `accounts` and `settings` directly, and may keep
    its own objects (a parser, a session) in `extras` for the life of one test.
    """

    publisher: Any
    blobs: Any
    accounts: BaseModel
    settings: BaseSettings
    client: TestClient[Any, Any]
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    async def start(cls, channel: Channel, config: Path, publisher: Any,
                    blobs: Any | None = None) -> ContractEdge:
        doc = load_document(config)
        own = channel.settings()
        accounts = channel.load_accounts(doc)
        blobs = blobs or MemoryBlobStore()
        service = Service(
            name=channel.name, port=0, settings=IntakeSettings(),
            routes=channel.http_routes(),
            state={SERVICE_SETTINGS: own, ACCOUNTS: accounts, PUBLISHER: publisher,
                   BLOBS: blobs},
            client_max_size=int(getattr(own, "max_body_bytes", 1024**2)) + 64 * 1024,
        )
        client: TestClient[Any, Any] = TestClient(TestServer(service.build_app()))
        await client.start_server()
        return cls(publisher, blobs, accounts, own, client)

    async def close(self) -> None:
        await self.client.close()


@dataclass(frozen=True)
class EdgeAnswer:
    """What the edge told the source: `accepted` (2xx, SMTP 250, `OK`), `deferred` (5xx, 451:
    try again), or neither (refused for good). `status` is the raw answer, for messages."""

    status: int | str
    accepted: bool
    deferred: bool = False

    @classmethod
    async def from_http(cls, response: ClientResponse) -> EdgeAnswer:
        status = response.status
        if status >= 300:
            return cls(f"{status} {await response.text()}"[:500], False, status >= 500)
        return cls(status, True)


class ConnectorContract:
    """Every connector passes these; set `channel` and `config`, and implement `send_fixture`
    (HTTP) or `submit` (any transport)."""

    channel: ClassVar[Channel]
    config: ClassVar[Path]

    async def send_fixture(self, client: TestClient[Any, Any], fixture: Path) -> ClientResponse:
        """HTTP connectors: send `fixture` as the source would, return the response."""
        raise NotImplementedError("implement send_fixture (HTTP) or submit (other transports)")

    async def submit(self, edge: ContractEdge, fixture: Path) -> EdgeAnswer:
        """Feed `fixture` to the edge as its transport would, and say how the edge answered.

        The hook for a non-HTTP connector: call the entry point the transport calls (an SMTP
        handler, a frame parser) with `edge.publisher`, `edge.blobs`, `edge.accounts`. The
        default sends it over HTTP with `send_fixture`.
        """
        return await EdgeAnswer.from_http(await self.send_fixture(edge.client, fixture))

    @classmethod
    def folder(cls) -> Path:
        """The connector's folder: where its `tests/test_contract.py` (this subclass) lives."""
        test_file = getattr(sys.modules.get(cls.__module__), "__file__", None)
        if test_file and Path(test_file).resolve().parent.name == "tests":
            return Path(test_file).resolve().parent.parent
        module = sys.modules[cls.channel.settings.__module__]
        return Path(module.__file__ or ".").resolve().parent

    @classmethod
    def fixtures(cls) -> list[Path]:
        return sorted(p for p in (cls.folder() / "fixtures").iterdir()
                      if p.is_file() and not p.name.startswith(".")
                      and not p.name.endswith((".expected.json", ".headers.json",
                                               ".ignored.txt")))

    @classmethod
    def expected_fixtures(cls) -> list[Path]:
        return [f for f in cls.fixtures()
                if f.with_name(f.stem + ".expected.json").exists()]

    @pytest.fixture
    def publisher(self) -> RecordingPublisher:
        return RecordingPublisher()

    @pytest.fixture
    async def edge(self, publisher: RecordingPublisher) -> AsyncIterator[ContractEdge]:
        edge = await ContractEdge.start(self.channel, self.config, publisher)
        yield edge
        await edge.close()

    @pytest.fixture
    async def client(self, edge: ContractEdge) -> TestClient[Any, Any]:
        return edge.client

    def test_channel_name_is_its_folder(self) -> None:
        assert self.folder().name == self.channel.name
        assert self.channel.settings.model_config.get("env_prefix") == (
            f"INTAKE_{self.channel.name.upper()}_")

    def test_there_are_fixtures_with_expected_messages(self) -> None:
        fixtures = self.fixtures()
        assert fixtures, "capture real payloads into fixtures/ first"
        for fixture in fixtures:
            ignored = fixture.with_name(fixture.stem + ".ignored.txt")
            expected = fixture.with_name(fixture.stem + ".expected.json")
            assert expected.exists() or ignored.exists(), f"{fixture.name} has no expected file"

    async def test_health_endpoints_answer(self, edge: ContractEdge) -> None:
        for path in ("/healthz", "/readyz", "/metrics"):
            response = await edge.client.get(path)
            assert response.status == 200, path

    async def test_each_fixture_yields_its_expected_message(
            self, edge: ContractEdge, publisher: RecordingPublisher) -> None:
        for fixture in self.expected_fixtures():
            expected_path = fixture.with_name(fixture.stem + ".expected.json")
            publisher.messages.clear()
            answer = await self.submit(edge, fixture)
            assert answer.accepted, (fixture.name, answer.status)
            assert len(publisher.messages) == 1, fixture.name
            actual = comparable(publisher.messages[0])
            if os.environ.get("INTAKE_GOLDEN") == "1":
                expected_path.write_text(
                    json.dumps(actual, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            expected = comparable(json.loads(expected_path.read_text(encoding="utf-8")))
            assert actual == expected, f"{fixture.name} (INTAKE_GOLDEN=1 rewrites)"

    async def test_keys_are_stable_and_scoped_to_channel_and_account(
            self, edge: ContractEdge, publisher: RecordingPublisher) -> None:
        """The same event twice: the same key both times, or dropped at the edge the second
        time (answered with success, not published again), as the SDK's edge does."""
        for fixture in self.expected_fixtures():
            publisher.messages.clear()
            for _ in range(2):
                answer = await self.submit(edge, fixture)
                assert answer.accepted, (fixture.name, answer.status)
            assert 1 <= len(publisher.messages) <= 2, fixture.name
            first = publisher.messages[0]
            assert {m.idempotency_key for m in publisher.messages} == {
                first.idempotency_key}, fixture.name
            assert first.idempotency_key.startswith(
                f"{self.channel.name}:{first.account}:"), first.idempotency_key
            assert first.channel == self.channel.name

    async def test_success_only_once_durable(self) -> None:
        edge = await ContractEdge.start(self.channel, self.config, RefusingPublisher())
        try:
            for fixture in self.expected_fixtures():
                answer = await self.submit(edge, fixture)
                assert not answer.accepted and answer.deferred, (fixture.name, answer.status)
        finally:
            await edge.close()


# -- the sender contract --------------------------------------------------------------------------


class MemoryBus:
    """Takes publishes as a confirming broker would, and can refuse the next ones."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, bytes]] = []
        self.dead: list[tuple[str, str, str, str | None, str | None, bytes]] = []
        self.refuse = 0  # this many publishes raise BrokerUnavailable

    async def publish(self, exchange: str, routing_key: str, body: bytes,
                      headers: dict[str, Any] | None = None, message_id: str | None = None,
                      timeout: float | None = None, mandatory: bool = True) -> None:
        if self.refuse:
            self.refuse -= 1
            raise BrokerUnavailable("the broker did not confirm (test)")
        self.published.append((exchange, routing_key, body))

    def names(self, logical: str) -> str:
        """The physical name of a logical exchange or queue (no prefix here)."""
        return logical

    async def dead_letter(self, body: bytes, reason: str, error: str, *, queue: str,
                          exchange: str | None = None, routing_key: str | None = None,
                          headers: dict[str, Any] | None = None) -> str:
        """As `Bus.dead_letter`: published to `dead` (key: the reason); `dead` keeps each
        letter's (id, reason, error, exchange, routing key, body)."""
        await self.publish("dead", reason, body)
        dead_id = uuid.uuid4().hex
        self.dead.append((dead_id, reason, error, exchange, routing_key, body))
        return dead_id

    @property
    def results(self) -> list[tuple[str, DeliveryResult]]:
        """(routing key, result) of everything published to `delivery`."""
        return [(key, DeliveryResult.model_validate_json(body))
                for exchange, key, body in self.published if exchange == "delivery"]


class SenderContract:
    """Every connector with a sender passes these, offline (no broker, a SQLite state store).

    Set `channel`, `account` and `recipient`; implement `delivered` (the outbound ids the
    transport took, in order) and `break_transport` (the next send fails as the transport
    would); declare `failure`: what this channel does with that failure, `failed` (with
    `failure_reason`) or `retried`. `sender_settings` may hand the sender its settings.
    """

    channel: ClassVar[Channel]
    account: ClassVar[str]
    recipient: ClassVar[Identity]
    failure: ClassVar[Literal["failed", "retried"]] = "failed"
    failure_reason: ClassVar[str | None] = None

    def sender_settings(self, tmp_path: Path) -> Any:
        return None

    def delivered(self, sender: Any) -> list[str]:
        raise NotImplementedError

    def break_transport(self, sender: Any) -> None:
        raise NotImplementedError

    def repair_transport(self, sender: Any) -> None:
        """Undo `break_transport` (for `retried`); the default expects a one-shot failure."""

    def outbound_fixture(self) -> OutboundMessage:
        return OutboundMessage(
            idempotency_key=f"contract:{uuid.uuid4()}", ticket_id="ticket-1",
            ticket_number="1001", channel=self.channel.name,  # type: ignore[arg-type]
            account=self.account, to=self.recipient, subject="Re: your order",
            text="Your replacement ships today.")

    @pytest.fixture
    def bus(self) -> MemoryBus:
        return MemoryBus()

    @pytest.fixture
    async def runner(self, bus: MemoryBus, tmp_path: Path) -> AsyncIterator[SenderRunner]:
        assert self.channel.sender is not None, "the channel declares no sender"
        runner = SenderRunner(bus, self.channel.name, self.channel.sender,
                              StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.sqlite3'}"),
                              settings=self.sender_settings(tmp_path), poll_s=3600)
        await runner.open()
        yield runner
        await runner.close()
        await runner.state.close()

    async def test_a_message_is_delivered_once_even_when_redelivered(
            self, runner: SenderRunner, bus: MemoryBus) -> None:
        message = self.outbound_fixture()
        await runner.handle(message)
        await runner.handle(message)  # the broker's redelivery, or the relay's repeat
        assert self.delivered(runner.sender) == [str(message.id)]
        (first_key, first), (second_key, second) = bus.results
        assert first == second, "a redelivery publishes the recorded result again"
        assert first_key == f"{message.channel}.{message.account}" == second_key
        assert (first.outbound_id, first.status, first.attempt) == (message.id, "sent", 1)
        assert (first.channel, first.account) == (message.channel, message.account)

    async def test_a_result_the_broker_did_not_confirm_is_published_on_redelivery(
            self, runner: SenderRunner, bus: MemoryBus) -> None:
        """Sent, but the result's publish failed, so the message was not acked: the
        redelivery publishes the result and does not send again."""
        message = self.outbound_fixture()
        bus.refuse = 1
        with pytest.raises(BrokerUnavailable):
            await runner.handle(message)
        assert bus.results == []
        await runner.handle(message)
        assert self.delivered(runner.sender) == [str(message.id)]
        [(_, result)] = bus.results
        assert result.status == "sent"

    async def test_a_transport_failure_is_failed_with_its_reason_or_retried_as_declared(
            self, runner: SenderRunner, bus: MemoryBus) -> None:
        message = self.outbound_fixture()
        self.break_transport(runner.sender)
        await runner.handle(message)  # returns either way: the broker's message is acked
        if self.failure == "failed":
            [(_, result)] = bus.results
            assert result.status == "failed" and result.reason, result
            if self.failure_reason is not None:
                assert result.reason == self.failure_reason
            assert self.delivered(runner.sender) == []
            await runner.handle(message)  # redelivered: reported again, not sent
            assert self.delivered(runner.sender) == []
            return
        assert bus.results == [], "a retried message has no result until an attempt settles"
        assert await runner.retries.depth() == 1
        self.repair_transport(runner.sender)
        await runner.handle(message)  # a redelivery meanwhile does not send it twice
        assert self.delivered(runner.sender) == []
        assert await runner.retry_due(due_by=time.time() + 365 * 86400) == 1
        assert self.delivered(runner.sender) == [str(message.id)]
        [(_, result)] = bus.results
        assert (result.status, result.attempt) == ("sent", 2)
        assert await runner.retries.depth() == 0

    async def test_a_message_for_another_channel_is_refused(
            self, runner: SenderRunner) -> None:
        other = "email" if self.channel.name != "email" else "sdk"
        message = self.outbound_fixture().model_copy(update={"channel": other})
        with pytest.raises(Rejected):
            await runner.handle(message)
        assert self.delivered(runner.sender) == []
