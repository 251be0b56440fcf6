"""Bearer tokens on the agent API: every wrong shape is a 401 in JSON, never a 500."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import ticket_core.api
from ticket_core.tests.builders import message, route

from .support import STORE, TOKEN, agent_api, get_with, send_raw, status_of


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


# ---- agents' scoped tokens -----------------------------------------------------------------

ADMIN = {"Authorization": f"Bearer {TOKEN}"}


async def issue(server: Any, desk: str, **token: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """An agent of `desk` (made with the admin token) and a token of theirs."""
    async with aiohttp.ClientSession(str(server.make_url("/"))) as http:
        async with http.post("/api/v1/agents", headers=ADMIN, json={
                "name": desk, "email": f"{desk}-{len(token)}@shop.example",
                "desks": [desk]}) as answer:
            assert answer.status == 201, await answer.text()
            agent = await answer.json()
        async with http.post("/api/v1/tokens", headers=ADMIN,
                             json={"agent_id": agent["id"], **token}) as answer:
            assert answer.status == 201, await answer.text()
            return agent, await answer.json()


def auth(token: str) -> bytes:
    return b"Bearer " + token.encode()


async def test_an_agent_token_works_and_a_near_miss_is_401(tmp_path: Path) -> None:
    async with agent_api(tmp_path) as server:
        _, issued = await issue(server, "aftersales")
        token = issued["token"]
        ok = await send_raw(server.port, get_with(auth(token)))
        near = [await send_raw(server.port, get_with(auth(wrong))) for wrong in (
            token[:-1], token + "x", token.upper(), "itk_", "itk_" + "A" * 43,
            token[:-1] + ("A" if token[-1] != "A" else "B"))]
    assert status_of(ok) == 200, ok[:300]
    for answer in near:
        assert status_of(answer) == 401 and body_of(answer)["error"] == "unauthorized"


async def test_a_revoked_token_is_401_from_the_very_next_request(tmp_path: Path) -> None:
    async with agent_api(tmp_path) as server:
        _, issued = await issue(server, "aftersales")
        before = await send_raw(server.port, get_with(auth(issued["token"])))
        revoke = (f"DELETE /api/v1/tokens/{issued['id']} HTTP/1.1\r\nHost: test\r\n"
                  f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").encode()
        revoked = await send_raw(server.port, revoke)
        after = await send_raw(server.port, get_with(auth(issued["token"])))
    assert status_of(before) == 200
    assert status_of(revoked) == 204
    assert status_of(after) == 401 and body_of(after)["error"] == "unauthorized"


async def test_an_expired_token_is_401(tmp_path: Path) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    async with agent_api(tmp_path) as server:
        _, issued = await issue(server, "aftersales", expires_at=soon)
        before = await send_raw(server.port, get_with(auth(issued["token"])))
        await asyncio.sleep(1.2)
        after = await send_raw(server.port, get_with(auth(issued["token"])))
    assert status_of(before) == 200
    assert status_of(after) == 401


async def test_only_the_tokens_sha256_is_stored(tmp_path: Path) -> None:
    async with agent_api(tmp_path) as server:
        _, issued = await issue(server, "aftersales")
        await send_raw(server.port, get_with(auth(issued["token"])))
    token = issued["token"].encode()
    digest = hashlib.sha256(token).hexdigest().encode()
    files = list(tmp_path.glob("intake.sqlite3*"))  # the database, its WAL and shared memory
    stored = b"".join(f.read_bytes() for f in files)
    assert files and digest in stored
    assert token not in stored and token[4:20] not in stored


async def test_a_scoped_token_gets_404_for_another_desks_ticket(tmp_path: Path) -> None:
    async with agent_api(tmp_path) as server:
        store = server.app[STORE]
        result = await store.persist(message("s-1", routed=route("aftersales")))
        _, presales = await issue(server, "presales")
        _, aftersales = await issue(server, "aftersales")
        path = f"/api/v1/tickets/{result.ticket_id}".encode()
        other = await send_raw(server.port, get_with(auth(presales["token"]), path))
        own = await send_raw(server.port, get_with(auth(aftersales["token"]), path))
        listed = await send_raw(server.port, get_with(auth(presales["token"])))
        desk = await send_raw(server.port, get_with(auth(presales["token"]),
                                                    b"/api/v1/tickets?desk=aftersales"))
    assert status_of(other) == 404 and body_of(other)["error"] == "ticket_not_found"
    assert status_of(own) == 200
    assert body_of(listed)["items"] == []
    assert status_of(desk) == 403 and body_of(desk)["error"] == "desk_not_in_scope"


async def test_an_agent_token_cannot_issue_tokens(tmp_path: Path) -> None:
    async with agent_api(tmp_path) as server:
        agent, issued = await issue(server, "aftersales")
        body = json.dumps({"agent_id": agent["id"]}).encode()
        request = (b"POST /api/v1/tokens HTTP/1.1\r\nHost: test\r\nContent-Type: "
                   b"application/json\r\nAuthorization: " + auth(issued["token"])
                   + b"\r\nContent-Length: " + str(len(body)).encode()
                   + b"\r\nConnection: close\r\n\r\n" + body)
        answer = await send_raw(server.port, request)
    assert status_of(answer) == 403
    assert body_of(answer) == {"error": "forbidden", "message": "Creating a token requires "
                               "role admin.", "fields": {"role": "requires admin"}}
