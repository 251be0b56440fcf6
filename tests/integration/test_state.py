"""The connectors' state store on SQLite (a temp file) and real PostgreSQL (a schema per test)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from intake.settings import IntakeSettings
from intake.state import StateStore, state_url

IN_CI = os.environ.get("CI") == "true"
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
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    if request.param == "sqlite":
        async with StateStore(f"sqlite+aiosqlite:///{tmp_path / 'state.sqlite3'}") as store:
            yield store
        return
    schema = f"state_t_{uuid.uuid4().hex[:12]}"
    try:
        await asyncio.wait_for(_pg(f'CREATE SCHEMA "{schema}"'), 15)
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL unreachable: {exc!r}")
        pytest.skip(f"PostgreSQL unreachable at {PG_URL}: {exc!r}")
    try:
        async with StateStore(PG_URL, schema=schema) as store:
            yield store
    finally:
        await _pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def test_values_are_namespaced_json_and_survive_a_reopen(store: StateStore) -> None:
    cursors = store.namespace("imap:support")
    await cursors.put("INBOX", {"uidvalidity": 7, "last_uid": 42})
    await store.namespace("imap:sales").put("INBOX", {"last_uid": 1})
    assert await cursors.get("INBOX") == {"last_uid": 42, "uidvalidity": 7}
    await cursors.put("INBOX", {"uidvalidity": 7, "last_uid": 43})
    await store.close()
    await store.open()
    assert (await store.namespace("imap:support").get("INBOX"))["last_uid"] == 43
    assert await store.namespace("imap:sales").get("INBOX") == {"last_uid": 1}
    assert await cursors.get("missing", "none") == "none"


async def test_put_new_lets_exactly_one_claimer_win(store: StateStore) -> None:
    ledger = store.namespace("sent:loopback")
    results = await asyncio.gather(*(ledger.put_new("m1", {"by": n}) for n in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    assert await ledger.delete("m1") and not await ledger.delete("m1")
    assert await ledger.put_new("m1", {"by": "again"})


async def test_items_lists_a_prefix_in_key_order(store: StateStore) -> None:
    log = store.namespace("sdk:app1")
    for key in ("user:b:2", "user:a:1", "user:b:1", "other"):
        await log.put(key, key.upper())
    assert [k for k, _ in await log.items("user:b:")] == ["user:b:1", "user:b:2"]
    assert len(await log.items()) == 4
    assert [k for k, _ in await log.items("user:b:", start="user:b:2")] == ["user:b:2"]
    assert [k for k, _ in await log.items("user:a:", start="user:b:")] == []


async def test_a_queue_hands_out_due_items_once_per_lease(store: StateStore) -> None:
    queue = store.queue("retry:loopback")
    first = await queue.push({"n": 1})
    await queue.push({"n": 2}, delay_s=3600)
    claimed = await queue.claim(10, lease_s=3600)
    assert [c.item for c in claimed] == [{"n": 1}] and claimed[0].id == first
    assert await queue.claim(10) == []  # leased: nobody else gets it
    await queue.retry(first, delay_s=0, item={"n": 1, "why": "busy"})
    again = await queue.claim(10)
    assert again[0].item == {"n": 1, "why": "busy"} and again[0].attempts == 1
    await queue.done(first)
    assert await queue.depth() == 1
    due_in = await queue.next_due_in()
    assert due_in is not None and due_in > 3000


async def test_an_item_whose_claimer_died_comes_back_after_its_lease(store: StateStore) -> None:
    queue = store.queue("journal")
    await queue.push("call-1")
    assert len(await queue.claim(lease_s=0.0)) == 1
    assert [c.item for c in await queue.claim()] == ["call-1"]


async def test_concurrent_claims_never_share_an_item(store: StateStore) -> None:
    queue = store.queue("pending")
    for n in range(20):
        await queue.push(n)
    batches = await asyncio.gather(*(queue.claim(3, lease_s=600) for _ in range(10)))
    seen = [c.item for batch in batches for c in batch]
    assert sorted(seen) == list(range(20))


def test_the_default_is_a_sqlite_file_under_the_data_dir(tmp_path: Path) -> None:
    assert state_url(IntakeSettings(data_dir=tmp_path)).endswith(
        str(tmp_path.resolve() / "state.sqlite3"))
    assert state_url(IntakeSettings(state_url="postgresql://db/x")) == (
        "postgresql+asyncpg://db/x")


async def test_put_many_writes_across_namespaces_in_one_transaction(store: StateStore) -> None:
    await store.namespace("sdk:a").put("k", "old")
    await store.put_many([("sdk:a", "k", {"new": 1}), ("sdk:b", "k2", [1, 2]),
                          ("sdk:a", "k3", None)])
    assert await store.namespace("sdk:a").get("k") == {"new": 1}
    assert await store.namespace("sdk:b").get("k2") == [1, 2]
    assert [k for k, _ in await store.namespace("sdk:a").items()] == ["k", "k3"]
    await store.put_many([])
    with pytest.raises(ValueError):
        await store.put_many([("", "k", 1)])


async def test_writes_arriving_together_share_a_commit_and_each_gets_its_answer(
        store: StateStore) -> None:
    ledger = store.namespace("sent:many")
    claims = await asyncio.gather(*(ledger.put_new(f"k{n % 10}", n) for n in range(50)),
                                  *(ledger.put(f"p{n}", n) for n in range(50)))
    assert sum(1 for c in claims[:50] if c) == 10  # one winner per key, in any group
    assert len(await ledger.items()) == 60
    assert await asyncio.gather(*(ledger.delete(f"p{n}") for n in range(50))) == [True] * 50
    await store.close()
    await store.open()
    assert len(await store.namespace("sent:many").items()) == 10  # all of it committed


async def test_put_new_with_writes_the_rest_only_with_the_claim(store: StateStore) -> None:
    assert await store.put_new_with("log", "u:1", {"n": 1}, [("head", "u", 1)])
    assert not await store.put_new_with("log", "u:1", {"n": 2}, [("head", "u", 99)])
    assert await store.namespace("log").get("u:1") == {"n": 1}
    assert await store.namespace("head").get("u") == 1


# A child process writes as fast as it can (puts, claims-with-writes and queue pushes, many in
# flight at once so that they are group-committed) and prints each write's key once its call
# returned; it is SIGKILLed mid-stream. Every key it printed must be there after a reopen.
CRASHING_WRITER = r"""
import asyncio, os, sys
from intake.state import StateStore

async def one(store, n):
    if n % 3 == 0:
        await store.namespace("crash").put(f"k{n}", {"n": n, "pad": "x" * (n % 200)})
    elif n % 3 == 1:
        assert await store.put_new_with("crash", f"k{n}", n, [("crash-side", f"k{n}", n)])
    else:
        await store.queue("crash-queue").push({"n": n})
        await store.namespace("crash").put(f"k{n}", n)
    os.write(1, f"{n}\n".encode())

async def main():
    store = StateStore(sys.argv[1])
    await store.open()
    os.write(1, b"open\n")
    n = 0
    while True:
        await asyncio.gather(*(one(store, n + i) for i in range(16)))
        n += 16

asyncio.run(main())
"""


async def test_every_write_that_returned_survives_a_sigkill(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state.sqlite3'}"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_WRITER, url, stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None
    returned: list[int] = []
    try:
        assert await asyncio.wait_for(child.stdout.readline(), 30) == b"open\n"
        async with asyncio.timeout(60):
            while len(returned) < 1500:
                returned.append(int(await child.stdout.readline()))
    finally:
        child.send_signal(signal.SIGKILL)  # in the middle of a group, most likely
        returned += [int(line) for line in (await child.stdout.read()).split()]
        await child.wait()
    assert child.returncode == -signal.SIGKILL
    async with StateStore(url) as store:
        values = dict(await store.namespace("crash").items(limit=1_000_000))
        side = dict(await store.namespace("crash-side").items(limit=1_000_000))
        queued = await store.queue("crash-queue").claim(1_000_000)
    missing = [n for n in returned if f"k{n}" not in values]
    assert not missing, f"{len(missing)} returned writes lost, e.g. {missing[:5]}"
    assert all(side[f"k{n}"] == n for n in returned if n % 3 == 1)
    pushed = {item.item["n"] for item in queued}
    assert {n for n in returned if n % 3 == 2} <= pushed
    assert len(returned) >= 1500
