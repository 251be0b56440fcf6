"""Fixtures: the web form app with the example forms, a recording publisher, a tmp blob store."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from connectors.webform import CHANNEL
from connectors.webform.settings import WebformAccounts, WebformSettings
from intake.blobs import FileBlobStore
from intake.config import load_document
from intake.errors import BrokerUnavailable
from intake.message import Message
from intake.service import ACCOUNTS, BLOBS, PUBLISHER, SERVICE_SETTINGS

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "example.yaml"
PUBLIC_URL = "https://forms.example.com"

# A second, small form that exercises what the example does not: patterns, single files,
# an accept list, a form without subject and name fields, and an English page.
TINY_FORM: dict[str, Any] = {
    "id": "tiny",
    "title": "Order question",
    "theme_color": "#FFD700",
    "fields": [
        {"name": "order", "type": "text", "label": "Order number", "pattern": r"[0-9]{6}",
         "help": "Six digits, on your receipt."},
        {"name": "mail", "type": "email", "label": "Email"},
        {"name": "mobile", "type": "phone", "label": "Mobile"},
        {"name": "question", "type": "textarea", "label": "Question", "required": True},
        {"name": "photo", "type": "file", "label": "Photo", "accept": "image/png,.jpg"},
        {"name": "newsletter", "type": "checkbox", "label": "Newsletter"},
    ],
}


class RecordingPublisher:
    """Stands in for the kernel's Publisher: every message is 'durable' at once."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def publish(self, message: Message) -> None:
        self.messages.append(message)


class FailingPublisher(RecordingPublisher):
    """Neither the broker nor the outbox took the message."""

    async def publish(self, message: Message) -> None:
        raise BrokerUnavailable("broker down and outbox not writable")


def load_accounts() -> WebformAccounts:
    accounts = CHANNEL.load_accounts(load_document(EXAMPLE))
    assert isinstance(accounts, WebformAccounts)
    return WebformAccounts.model_validate(
        {"forms": [*(f.model_dump() for f in accounts.forms), TINY_FORM]})


def make_settings(**overrides: Any) -> WebformSettings:
    values: dict[str, Any] = {"public_url": PUBLIC_URL, "max_body_bytes": 256 * 1024,
                              "max_file_bytes": 32 * 1024, "max_files": 3,
                              "rate_limit_per_minute": 600, "rate_limit_burst": 100}
    values.update(overrides)
    return WebformSettings(**values)


def build_app(settings: WebformSettings, publisher: RecordingPublisher,
              blobs: FileBlobStore) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes + 64 * 1024)
    app[SERVICE_SETTINGS] = settings
    app[ACCOUNTS] = load_accounts()
    app[PUBLISHER] = publisher  # type: ignore[assignment]
    app[BLOBS] = blobs
    app.router.add_routes(CHANNEL.routes())
    return app


@pytest.fixture
def publisher() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def blobs(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "blobs")


MakeClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_client(aiohttp_client: Any, publisher: RecordingPublisher,
                blobs: FileBlobStore) -> MakeClient:
    async def make(publisher: RecordingPublisher = publisher, **overrides: Any) -> TestClient:
        return await aiohttp_client(build_app(make_settings(**overrides), publisher, blobs))

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient:
    return await make_client()
