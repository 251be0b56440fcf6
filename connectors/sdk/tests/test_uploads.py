"""Uploads: typed by content, capped, owned by the uploader, attached to tickets."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp

from intake.testing import ContractEdge, RecordingPublisher

from .conftest import Sdk

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 100


async def send(sdk: Sdk, token: str, data: bytes, filename: str,
               content_type: str = "image/jpeg") -> tuple[int, dict]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type=content_type)
    response = await sdk.client.post(f"{sdk.base}/uploads", data=form,
                                     headers={"Authorization": f"Bearer {token}"})
    return response.status, await response.json()


async def test_a_png_declared_jpeg_is_stored_as_png_and_attached(
        app_client: Sdk, edge: ContractEdge, publisher: RecordingPublisher) -> None:
    token = await app_client.signed("u-1")
    status, upload = await send(app_client, token, PNG, "../../照片\u202egnp.exe")
    assert status == 201, upload
    assert upload["content_type"] == "image/png" and upload["size"] == len(PNG)
    assert "/" not in upload["filename"] and "\u202e" not in upload["filename"]
    assert edge.blobs.blobs[f"sha256:{upload['sha256']}"] == PNG
    status, _ = await app_client.call("POST", "/tickets", token, {
        "client_msg_id": "t", "text": "见图", "fields": {"category": "售后"},
        "attachments": [upload["upload_id"]]})
    assert status == 201
    [attachment] = publisher.messages[0].attachments
    assert attachment.content_type == "image/png" and attachment.sha256 == upload["sha256"]


async def test_refused_uploads(app_client: Sdk) -> None:
    token = await app_client.signed("u-1")
    assert (await send(app_client, token, EXE, "photo.png", "image/png"))[0] == 415
    assert (await send(app_client, token, b"", "empty.txt", "text/plain"))[0] == 422
    text_status, text = await send(app_client, token, "纯文本说明".encode(), "a.txt")
    assert text_status == 201 and text["content_type"] == "text/plain"
    response = await app_client.client.post(f"{app_client.base}/uploads", json={"file": "x"},
                                            headers={"Authorization": f"Bearer {token}"})
    assert response.status == 415


async def test_over_the_cap_is_413(app_client: Sdk, edge: ContractEdge) -> None:
    token = await app_client.signed("u-1")
    status, answer = await send(app_client, token, PNG + b"\x00" * (10 * 1024 * 1024), "big.png")
    assert status == 413 and answer["error"] == "payload_too_large"


async def test_another_users_upload_is_unknown(app_client: Sdk) -> None:
    alice, bob = await app_client.signed("u-1"), await app_client.signed("u-2")
    _, upload = await send(app_client, alice, PNG, "a.png")
    status, answer = await app_client.call("POST", "/messages", bob, {
        "client_msg_id": "m", "text": "mine?", "attachments": [upload["upload_id"]]})
    assert (status, answer["error"]) == (422, "invalid_attachment")


async def test_attachments_get_short_lived_signed_urls(app_client: Sdk) -> None:
    import time

    from connectors.sdk.inbound import files

    token = await app_client.signed("u-1")
    _, upload = await send(app_client, token, PNG, "photo.png")
    _, text = await send(app_client, token, b"<svg onload=alert(1)>", "a.txt")
    _, ticket = await app_client.call("POST", "/tickets", token, {
        "client_msg_id": "t", "text": "见图", "fields": {"category": "售后"},
        "attachments": [upload["upload_id"], text["upload_id"]]})
    _, detail = await app_client.call("GET", f"/tickets/{ticket['id']}", token)
    image, note = detail["messages"][0]["attachments"]
    response = await app_client.client.get(image["url"])  # no session: the URL is the proof
    assert response.status == 200 and await response.read() == PNG
    assert response.headers["Content-Disposition"].startswith("inline")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    response = await app_client.client.get(note["url"])
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"].startswith("attachment")
    tampered = image["url"].replace("type=image%2Fpng", "type=text%2Fhtml")
    assert (await app_client.client.get(tampered)).status == 404
    app = edge_app(app_client)
    expired = files.signed_url(app, image, now=time.time() - 3600)
    assert (await app_client.client.get(expired)).status == 404


def edge_app(sdk: Sdk) -> Any:
    from connectors.sdk.inbound.runtime import runtime_for

    return runtime_for(sdk.client.app).app(sdk.app)
