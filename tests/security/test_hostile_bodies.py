"""JSON bombs, oversized bodies and heads, and forged client addresses at the HTTP entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from intake.settings import REPO_ROOT
from intake.testing import RecordingPublisher
from router.reload import RulesHolder
from router.service import RULES, post_explain

from .support import agent_api, send_raw, status_of
from .webform import VALID, webform

SUBMIT = "/forms/contact/submissions"
JSON = {"Content-Type": "application/json", "Accept": "application/json"}
BOMBS = {
    "deep_arrays": b"[" * 100_000 + b"]" * 100_000,
    "deep_objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "huge_exponent": b'{"name": 1e999999, "email": "li@example.cn"}',
    "huge_integer": b'{"name": ' + b"9" * 100_000 + b', "email": "li@example.cn"}',
    "lone_surrogate": b'{"name": "\\ud800", "email": "li@example.cn"}',
    "nan": b'{"name": NaN}',
}


@pytest.mark.parametrize("body", list(BOMBS.values()), ids=list(BOMBS))
async def test_json_bombs_at_the_web_form_are_4xx(body: bytes) -> None:
    publisher = RecordingPublisher()
    async with webform(publisher) as client:
        response = await client.post(SUBMIT, data=body, headers=JSON)
        assert 400 <= response.status < 500, await response.text()
        assert (await response.json())["error"] in ("malformed_body", "validation_failed")
    assert publisher.messages == []


async def test_duplicate_json_keys_keep_the_last_value_only() -> None:
    publisher = RecordingPublisher()
    body = json.dumps(VALID)[:-1] + ', "email": "other@example.cn"}'
    async with webform(publisher) as client:
        response = await client.post(SUBMIT, data=body.encode(), headers=JSON)
        assert response.status == 201, await response.text()
    (message,) = publisher.messages
    assert [i.value for i in message.sender.identities] == ["other@example.cn"]


def explain_app(client_max_size: int = 1024**2) -> web.Application:
    holder = RulesHolder(REPO_ROOT / "deploy" / "intake.example.yaml")
    holder.load()
    app = web.Application(client_max_size=client_max_size)
    app[RULES] = holder
    app.router.add_post("/explain", post_explain)
    return app


@pytest.mark.parametrize("body", list(BOMBS.values()), ids=list(BOMBS))
async def test_json_bombs_at_explain_are_422(body: bytes) -> None:
    async with TestServer(explain_app()) as server:
        answer = await send_raw(server.port, b"POST /explain HTTP/1.1\r\nHost: t\r\n"
                                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                                + body)
    assert status_of(answer) == 422, answer[:300]


@pytest.mark.parametrize("chunked", [False, True], ids=["content_length", "chunked"])
async def test_an_oversized_body_at_explain_is_a_json_413(chunked: bool) -> None:
    body = b'{"text": "' + b"x" * (64 * 1024) + b'"}'
    framing = (b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
               if chunked else b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    async with TestServer(explain_app(client_max_size=16 * 1024)) as server:
        answer = await send_raw(server.port, b"POST /explain HTTP/1.1\r\nHost: t\r\n"
                                b"Content-Type: application/json\r\nConnection: close\r\n"
                                + framing)
    assert status_of(answer) == 413, answer[:300]
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert b"application/json" in head.lower()
    error = json.loads(payload)
    assert error["error"] == "payload_too_large" and "16384 bytes" in error["message"]


async def test_an_oversized_submission_is_413_before_it_is_read() -> None:
    async with webform() as client:
        response = await client.post(SUBMIT, data=b"{}", headers={
            **JSON, "Content-Length": str(11 * 1024 * 1024)})
        assert response.status == 413
        assert (await response.json())["error"] == "payload_too_large"


async def test_an_oversized_chunked_submission_is_413() -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(12):
            yield b" " * (1024 * 1024)

    async with webform() as client:
        response = await client.post(SUBMIT, data=chunks(), headers=JSON)
        assert response.status == 413
        assert (await response.json())["error"] == "payload_too_large"


@pytest.mark.parametrize("head", [
    pytest.param(b"X-Big: " + b"a" * 100_000 + b"\r\n", id="header_line_of_100kb"),
    pytest.param(b"".join(b"X-%d: 1\r\n" % i for i in range(200)), id="200_headers"),
    pytest.param(b"Cookie: " + b"a=b; " * 20_000 + b"\r\n", id="cookie_of_100kb"),
])
async def test_oversized_heads_are_400_and_the_server_lives_on(tmp_path: Path,
                                                               head: bytes) -> None:
    # aiohttp 3.14 refuses a line over 8190 bytes and more than 128 headers with a plain 400
    # before any handler runs (it logs the refusal at error level).
    async with agent_api(tmp_path) as server:
        refused = await send_raw(server.port, b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: t"
                                 b"\r\n" + head + b"\r\n")
        again = await send_raw(server.port, b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: t"
                               b"\r\nConnection: close\r\n\r\n")
    assert status_of(refused) == 400, refused[:200]
    assert status_of(again) == 200


async def test_a_forged_x_forwarded_for_does_not_escape_the_rate_limit() -> None:
    async with webform() as client:
        statuses = []
        for i in range(12):  # the default burst is 10 per address
            response = await client.post(SUBMIT, json=VALID, headers={
                "Accept": "application/json", "X-Forwarded-For": f"203.0.113.{i}"})
            statuses.append(response.status)
    assert statuses[:10] == [201] * 10 and statuses[10:] == [429, 429], statuses


async def test_the_honeypot_flags_whatever_address_is_claimed() -> None:
    publisher = RecordingPublisher()
    async with webform(publisher) as client:
        response = await client.post(SUBMIT, json={**VALID, "website": "http://spam"},
                                     headers={"Accept": "application/json",
                                              "X-Forwarded-For": "127.0.0.1"})
        assert response.status == 201
    assert publisher.messages[0].flags == ["spam_suspect"]
