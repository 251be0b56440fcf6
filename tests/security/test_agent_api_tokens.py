"""Bearer tokens on the agent API: every wrong shape is a 401 in JSON, never a 500."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import ticket_core.api

from .support import TOKEN, agent_api, get_with, send_raw, status_of


def body_of(answer: bytes) -> Any:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize("authorization", [
    pytest.param(None, id="missing"),
    pytest.param(b"", id="empty_header"),
    pytest.param(b"Bearer", id="scheme_without_token"),
    pytest.param(b"Bearer ", id="scheme_and_space"),
    pytest.param(b"Bearer wrong-token", id="wrong"),
    pytest.param(TOKEN[:-1].encode(), id="bare_token_without_scheme"),
    pytest.param(b"Bearer " + TOKEN[:-1].encode(), id="prefix_of_token"),
    pytest.param(b"Bearer " + TOKEN.encode() + b"x", id="token_plus_a_character"),
    pytest.param(b"Basic " + TOKEN.encode(), id="basic_scheme"),
    pytest.param(b"Token " + TOKEN.encode(), id="other_scheme"),
    pytest.param(b"Bearer " + TOKEN.upper().encode(), id="case_changed"),
    pytest.param(b"Bearer " + TOKEN.encode() + b" extra", id="token_then_a_word"),
    pytest.param(b"Bearer \xff\xfe" + TOKEN.encode(), id="not_utf8_bytes"),
    pytest.param("Bearer s3cret-agent-tökén".encode(), id="non_ascii"),
])
async def test_a_wrong_authorization_is_401_in_json(tmp_path: Path,
                                                    authorization: bytes | None) -> None:
    async with agent_api(tmp_path) as server:
        answer = await send_raw(server.port, get_with(authorization))
    assert status_of(answer) == 401, answer[:200]
    assert b"WWW-Authenticate: Bearer" in answer
    assert body_of(answer)["error"] == "unauthorized"


@pytest.mark.parametrize("authorization", [
    pytest.param(b"Bearer " + TOKEN.encode(), id="exact"),
    pytest.param(b"Bearer " + TOKEN.encode() + b"   ", id="trailing_spaces"),
    pytest.param(b"Bearer " + TOKEN.encode() + b"\t", id="trailing_tab"),
    pytest.param(b"bearer " + TOKEN.encode(), id="scheme_in_lower_case"),
])
async def test_the_token_with_trailing_whitespace_is_accepted(
        tmp_path: Path, authorization: bytes) -> None:
    # RFC 9110 section 5.5: whitespace around a field value is not part of it.
    async with agent_api(tmp_path) as server:
        answer = await send_raw(server.port, get_with(authorization))
    assert status_of(answer) == 200, answer[:200]


async def test_an_empty_configured_token_refuses_even_an_empty_bearer(tmp_path: Path) -> None:
    async with agent_api(tmp_path, token="") as server:
        for authorization in (None, b"Bearer ", b"Bearer x"):
            answer = await send_raw(server.port, get_with(authorization))
            assert status_of(answer) == 401, (authorization, answer[:200])


async def test_the_token_is_compared_in_constant_time(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = ticket_core.api.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(ticket_core.api.hmac, "compare_digest", spy)
    async with agent_api(tmp_path) as server:
        await send_raw(server.port, get_with(b"Bearer guess"))
        await send_raw(server.port, get_with(b"Bearer " + TOKEN.encode()))
    assert calls == [(b"guess", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


async def test_the_openapi_document_needs_no_token_but_nothing_else_is_open(
        tmp_path: Path) -> None:
    async with agent_api(tmp_path) as server:
        document = await send_raw(server.port, get_with(None, b"/api/v1/openapi.json"))
        other = await send_raw(server.port, get_with(None, b"/api/v1/openapi.json/../tickets"))
        encoded = await send_raw(server.port, get_with(None, b"/api/v1/%2e%2e/v1/tickets"))
    assert status_of(document) == 200
    assert status_of(other) in (401, 404)
    assert status_of(encoded) in (401, 404)
