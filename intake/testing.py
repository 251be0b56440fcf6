"""The connector contract suite and the in-memory parts fast tests use.

A connector's `tests/test_contract.py` subclasses `ConnectorContract`, names its `channel` and
its example config, and implements `send_fixture`; it then gets every check below. Anything
about routing keys, quorum queues or dead letters is tested on the real broker instead
(`tests/integration/`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from .blobs import BlobTooLarge, StoredBlob, blob_ref
from .channel import Channel
from .config import load_document
from .errors import Transient
from .message import Message
from .service import ACCOUNTS, BLOBS, PUBLISHER, SERVICE_SETTINGS, Service
from .settings import IntakeSettings

VOLATILE = {"id": "<id>", "received_at": "<received_at>", "trace_id": "<trace_id>"}


class RecordingPublisher:
    """Takes what an edge publishes and keeps it, as a confirmed broker would."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def publish(self, message: Message, exchange: str = "inbound") -> None:
        Message.model_validate_json(message.model_dump_json())  # what the bus would carry
        self.messages.append(message)


class RefusingPublisher(RecordingPublisher):
    """Neither the broker nor the outbox takes anything."""

    async def publish(self, message: Message, exchange: str = "inbound") -> None:
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
                           blobs: Any | None = None) -> TestClient:
    """The connector's routes on a test server, with in-memory publisher and blob store."""
    doc = load_document(config)
    own = channel.settings()
    service = Service(
        name=channel.name, port=0, settings=IntakeSettings(),
        routes=list(channel.routes()),
        state={SERVICE_SETTINGS: own, ACCOUNTS: channel.load_accounts(doc),
               PUBLISHER: publisher, BLOBS: blobs or MemoryBlobStore()},
        client_max_size=int(getattr(own, "max_body_bytes", 1024**2)) + 64 * 1024,
    )
    client = TestClient(TestServer(service.build_app()))
    await client.start_server()
    return client


class ConnectorContract:
    """Every connector passes these; set `channel` and `config`, implement `send_fixture`."""

    channel: ClassVar[Channel]
    config: ClassVar[Path]

    async def send_fixture(self, client: TestClient, fixture: Path) -> ClientResponse:
        raise NotImplementedError

    @classmethod
    def folder(cls) -> Path:
        module = sys.modules[cls.channel.routes.__module__]
        return Path(module.__file__ or ".").resolve().parent

    @classmethod
    def fixtures(cls) -> list[Path]:
        return sorted(p for p in (cls.folder() / "fixtures").iterdir()
                      if p.is_file() and not p.name.startswith(".")
                      and not p.name.endswith((".expected.json",
                                                              ".headers.json",
                                                              ".ignored.txt")))

    @pytest.fixture
    def publisher(self) -> RecordingPublisher:
        return RecordingPublisher()

    @pytest.fixture
    async def client(self, publisher: RecordingPublisher) -> AsyncIterator[TestClient]:
        client = await connector_client(self.channel, self.config, publisher)
        yield client
        await client.close()

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

    async def test_health_endpoints_answer(self, client: TestClient) -> None:
        for path in ("/healthz", "/readyz", "/metrics"):
            response = await client.get(path)
            assert response.status == 200, path

    async def test_each_fixture_yields_its_expected_message(
            self, client: TestClient, publisher: RecordingPublisher) -> None:
        for fixture in self.fixtures():
            expected_path = fixture.with_name(fixture.stem + ".expected.json")
            if not expected_path.exists():
                continue
            publisher.messages.clear()
            response = await self.send_fixture(client, fixture)
            assert response.status < 300, (fixture.name, await response.text())
            assert len(publisher.messages) == 1, fixture.name
            actual = comparable(publisher.messages[0])
            if os.environ.get("INTAKE_GOLDEN") == "1":
                expected_path.write_text(
                    json.dumps(actual, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            expected = comparable(json.loads(expected_path.read_text(encoding="utf-8")))
            assert actual == expected, f"{fixture.name} (INTAKE_GOLDEN=1 rewrites)"

    async def test_keys_are_stable_and_scoped_to_channel_and_account(
            self, client: TestClient, publisher: RecordingPublisher) -> None:
        for fixture in self.fixtures():
            if not fixture.with_name(fixture.stem + ".expected.json").exists():
                continue
            publisher.messages.clear()
            for _ in range(2):
                response = await self.send_fixture(client, fixture)
                assert response.status < 300, await response.text()
            first, second = publisher.messages
            assert first.idempotency_key == second.idempotency_key, fixture.name
            assert first.idempotency_key.startswith(
                f"{self.channel.name}:{first.account}:"), first.idempotency_key
            assert first.channel == self.channel.name

    async def test_success_only_once_durable(self) -> None:
        client = await connector_client(self.channel, self.config, RefusingPublisher())
        try:
            for fixture in self.fixtures():
                if not fixture.with_name(fixture.stem + ".expected.json").exists():
                    continue
                response = await self.send_fixture(client, fixture)
                assert response.status >= 500, (fixture.name, response.status)
        finally:
            await client.close()
