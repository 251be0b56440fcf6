"""`GET /api/v1/attachments/{sha256}`: bytes, safe headers, auth, unknown and hostile names."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from intake.blobs import FileBlobStore
from intake.message import Attachment
from ticket_core.api import api_routes, auth_middleware
from ticket_core.attachments import content_disposition
from ticket_core.store import TicketStore

from .builders import message, route

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def blobs(tmp_path: Path) -> Any:
    store = FileBlobStore(tmp_path / "blobs")
    yield store
    await store.close()


async def stored_attachment(store: TicketStore, blobs: FileBlobStore, data: bytes,
                            filename: str, content_type: str) -> str:
    ref = await blobs.put(data)
    digest = hashlib.sha256(data).hexdigest()
    await store.persist(message(routed=route(), attachments=[Attachment(
        filename=filename, content_type=content_type, size=len(data), sha256=digest,
        blob=ref)]))
    return digest


async def client_for(store: TicketStore, blobs: FileBlobStore,
                     aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    app = web.Application(middlewares=[auth_middleware(TOKEN)])
    app.add_routes(api_routes(store, blobs=blobs))
    return await aiohttp_client(app)


async def test_a_stored_attachment_is_served_with_its_type_name_and_safe_headers(
        store: TicketStore, blobs: FileBlobStore, aiohttp_client: ClientFactory) -> None:
    digest = await stored_attachment(store, blobs, b"%PDF-1.7 label", "label.pdf",
                                     "application/pdf")
    client = await client_for(store, blobs, aiohttp_client)

    response = await client.get(f"/api/v1/attachments/{digest}", headers=AUTH)

    assert response.status == 200
    assert await response.read() == b"%PDF-1.7 label"
    assert response.headers["Content-Type"] == "application/pdf"
    assert response.headers["Content-Disposition"] == (
        "attachment; filename=\"label.pdf\"; filename*=UTF-8''label.pdf")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"


async def test_a_hostile_stored_name_and_type_are_served_harmlessly(
        store: TicketStore, blobs: FileBlobStore, aiohttp_client: ClientFactory) -> None:
    name = '发票 "x"\\; filename=evil.html\r\n.html'
    digest = await stored_attachment(store, blobs, b"<script>alert(1)</script>", name,
                                     'text/html\r\nSet-Cookie: a=b')
    client = await client_for(store, blobs, aiohttp_client)

    response = await client.get(f"/api/v1/attachments/{digest}", headers=AUTH)

    assert response.status == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert "Set-Cookie" not in response.headers
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="')
    assert "\r" not in disposition and "\n" not in disposition
    fallback = disposition.split('filename="')[1].split('"; filename*=')[0]
    assert '"' not in fallback and "\\" not in fallback and fallback.isascii()
    assert disposition.endswith("filename*=UTF-8''%E5%8F%91%E7%A5%A8%20%22x%22%5C%3B%20"
                                "filename%3Devil.html%0D%0A.html")
    assert response.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"


async def test_unknown_malformed_and_unreferenced_blobs_are_404_and_no_token_is_401(
        store: TicketStore, blobs: FileBlobStore, aiohttp_client: ClientFactory) -> None:
    digest = await stored_attachment(store, blobs, b"data", "a.txt", "text/plain")
    unreferenced = (await blobs.put(b"a raw payload, not an attachment")).split(":")[1]
    client = await client_for(store, blobs, aiohttp_client)

    assert (await client.get(f"/api/v1/attachments/{digest}")).status == 401
    for name in ("0" * 64, unreferenced, "ZZ", digest.upper(), f"sha256:{digest}", "..%2F.."):
        response = await client.get(f"/api/v1/attachments/{name}", headers=AUTH)
        assert response.status == 404, name
        assert (await response.json())["error"] in ("attachment_not_found", "not_found")


def test_content_disposition_keeps_ascii_names_and_encodes_the_rest() -> None:
    assert content_disposition("a b.txt") == (
        "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt")
    assert content_disposition("Ünïcode.pdf").startswith('attachment; filename="Unicode.pdf"')
    assert content_disposition("日本.pdf").startswith('attachment; filename=".pdf"')
