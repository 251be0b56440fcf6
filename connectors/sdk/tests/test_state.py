"""The SDK's sessions, devices, claims and per-user log on SQLite and real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from connectors.sdk.state import Owner, SdkState
from intake import StateStore

PG_SERVER = os.environ.get("INTAKE_TEST_POSTGRES",
                           "postgresql+asyncpg://postgres@127.0.0.1:5432").rstrip("/")
PG_URL = f"{PG_SERVER}/test"


async def _pg(statement: str) -> None:
    engine = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def state(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SdkState]:
    if request.param == "sqlite":
        async with StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.sqlite3'}") as store:
            yield SdkState(store)
        return
    schema = f"sdk_t_{uuid.uuid4().hex[:12]}"
    try:
        await asyncio.wait_for(_pg(f'CREATE SCHEMA "{schema}"'), 15)
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL unreachable: {exc!r}")
        pytest.skip(f"PostgreSQL unreachable at {PG_URL}: {exc!r}")
    try:
        async with StateStore(PG_URL, schema=schema) as store:
            yield SdkState(store)
    finally:
        await _pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


ALICE = Owner("user", "demo-app", "u:1", "demo-shop")
ALICE_COLON = Owner("user", "demo-app", "u:1:2", "demo-shop")


async def test_the_log_is_strictly_increasing_per_user_under_concurrent_appends(
        state: SdkState) -> None:
    # Two writers sharing the store (as two replicas would) append at once.
    second = SdkState(state.store)
    seqs = await asyncio.gather(*(
        (state if n % 2 else second).append(ALICE, {"type": "t", "n": n}) for n in range(20)))
    assert sorted(seqs) == list(range(1, 21))
    events = await state.events_after(ALICE, 0)
    assert [e["seq"] for e in events] == list(range(1, 21))
    assert sorted(e["n"] for e in events) == list(range(20))
    assert [e["seq"] for e in await state.events_after(ALICE, 17)] == [18, 19, 20]
    assert await state.head(ALICE) == 20


async def test_a_user_id_holding_colons_never_shares_another_users_log(
        state: SdkState) -> None:
    await state.append(ALICE, {"type": "a"})
    await state.append(ALICE_COLON, {"type": "b"})
    assert [e["type"] for e in await state.events_after(ALICE, 0)] == ["a"]
    assert [e["type"] for e in await state.events_after(ALICE_COLON, 0)] == ["b"]


async def test_sessions_are_stored_by_hash_and_revoked_at_once(state: SdkState) -> None:
    token, session = await state.open_session("demo-app", ALICE, 60)
    assert await state.sessions.get(token) is None  # the token itself is never stored
    found = await state.session(token)
    assert found is not None and found.owner == ALICE and found.expires_at > time.time()
    await state.revoke(session)
    assert await state.session(token) is None


async def test_a_users_sockets_checking_at_once_read_the_session_once(
        state: SdkState, monkeypatch: pytest.MonkeyPatch) -> None:
    token, session = await state.open_session("demo-app", ALICE, 60)
    state._sessions.clear()  # as after a quiet spell
    reads = 0
    get = state.sessions.get

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal reads
        reads += 1
        return await get(*args, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(state.sessions, "get", counted)

    found = await asyncio.gather(*(state.session(token) for _ in range(10)))
    assert reads == 1 and all(f is not None and f.owner == ALICE for f in found)
    state._sessions.clear()
    racing = asyncio.ensure_future(state.session(token))
    await asyncio.sleep(0)  # the read has started
    await state.revoke(session)
    await racing  # whatever it found, it keeps nothing
    assert await state.session(token) is None


async def test_a_device_token_is_spent_once_and_its_tickets_move(state: SdkState) -> None:
    device_id, token = await state.new_device("demo-widget")
    device = Owner("device", "demo-widget", device_id)
    await state.put_ticket({"id": "t1", "owner": device.as_json(), "updated_at": "x"})
    assert [t["id"] for t in await state.tickets_of(device)] == ["t1"]
    results = await asyncio.gather(state.spend_device("demo-widget", token, ALICE),
                                   state.spend_device("demo-widget", token, ALICE_COLON))
    assert sorted(r is not None for r in results) == [False, True]
    winner = ALICE if results[0] else ALICE_COLON
    assert [t["id"] for t in await state.tickets_of(winner)] == ["t1"]
    assert await state.tickets_of(device) == []
    assert (await state.device("demo-widget", token) or {}).get("spent_by") == winner.id


async def test_a_claim_is_won_once(state: SdkState) -> None:
    results = await asyncio.gather(*(state.claim("sdk:a:k", "d") for _ in range(4)))
    assert sum(r is None for r in results) == 1


async def test_prune_removes_old_events_expired_sessions_and_uploads(state: SdkState) -> None:
    from connectors.sdk.state import LOG_RETENTION_S

    for n in range(5):
        await state.append(ALICE, {"type": "t", "n": n})
    await state.append(ALICE_COLON, {"type": "t"})
    token, _ = await state.open_session("demo-app", ALICE, 60)
    uploads = state.store.namespace("sdk:upload")
    await uploads.put("u1", {"owner": ALICE.as_json(), "expires_at": time.time() + 60})
    later = time.time() + LOG_RETENTION_S + 120
    assert await state.prune(now=time.time()) == 0
    assert await state.prune(now=later, page=2) == 5 + 1 + 1 + 1
    assert await state.events_after(ALICE, 0) == []
    assert await state.session(token) is None and await uploads.get("u1") is None
    # The log goes on above what was pruned.
    assert await state.append(ALICE, {"type": "t"}) == 6
