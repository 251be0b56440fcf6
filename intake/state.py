"""The connectors' small durable state: namespaced key/values and queues, SQLite or PostgreSQL.

What a connector must remember across restarts lives here, so that no channel imports a
database library: the sent-ledger of its replies, IMAP cursors, WeChat's pending replies, the
SDK's per-user log, the telephony journal. SQLite under `INTAKE_DATA_DIR` by default (WAL,
`synchronous=FULL`: a write is on disk when it returns); PostgreSQL when `INTAKE_STATE_URL`
names one, so replicas of a connector share it.

Values are JSON. A namespace is a word chosen by its user (`sent:email`, `imap:support@…`);
one store holds many. Queues are for work that outlives a process: an item is claimed for a
lease (a crash lets it come back when the lease ends), then finished or rescheduled.

This module is the face; the work is done by a backend: `state_sqlite.py` (the stdlib sqlite3
on a writer thread, group commit) for a SQLite file, `state_sql.py` (SQLAlchemy) for PostgreSQL.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

from .settings import IntakeSettings
from .state_sql import ClaimedRow, Row, SqlAlchemyState
from .state_sqlite import SqliteState

__all__ = ["QueuedItem", "StateNamespace", "StateQueue", "StateStore"]

JSON = Any  # a value json.dumps accepts: dict, list, str, int, float, bool or None
STATE_FILE = "state.sqlite3"


@dataclass(frozen=True)
class QueuedItem:
    """One claimed queue item: `attempts` counts the earlier reschedules (0 the first time)."""

    id: int
    item: JSON
    attempts: int
    created_at: float


def state_url(settings: IntakeSettings) -> str:
    """`INTAKE_STATE_URL`, or a SQLite file under `INTAKE_DATA_DIR`."""
    url = settings.state_url
    if not url:
        return f"sqlite+aiosqlite:///{(settings.data_dir / STATE_FILE).resolve()}"
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


class StateBackend(Protocol):
    """What a backend does; values arrive and leave as JSON text. Writes are durable when
    they return; reads see every write that returned."""

    dialect: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def put_many(self, rows: list[Row], now: float) -> None: ...
    async def put_new_with(self, claim: Row, rows: list[Row], now: float) -> bool: ...
    async def delete(self, namespace: str, key: str) -> bool: ...
    async def get(self, namespace: str, key: str) -> str | None: ...
    async def items(self, namespace: str, prefix: str, limit: int,
                    start: str | None) -> list[tuple[str, str]]: ...
    async def push(self, namespace: str, item: str, due_at: float, now: float) -> int: ...
    async def claim(self, namespace: str, limit: int, due_by: float,
                    leased_until: float) -> list[ClaimedRow]: ...
    async def done(self, item_id: int) -> None: ...
    async def retry(self, item_id: int, due_at: float, item: str | None) -> None: ...
    async def depth(self, namespace: str) -> int: ...
    async def earliest_due(self, namespace: str) -> float | None: ...


class StateStore:
    """The store; `namespace(name)` and `queue(name)` give the views channel code uses."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema
        self._backend: StateBackend | None = None

    @classmethod
    def from_settings(cls, settings: IntakeSettings) -> StateStore:
        return cls(state_url(settings))

    @property
    def dialect(self) -> str:
        return self.backend.dialect

    @property
    def backend(self) -> StateBackend:
        if self._backend is None:
            raise RuntimeError("the state store is not open (await store.open())")
        return self._backend

    async def open(self) -> None:
        """Create the tables if missing (and a SQLite file's directory); idempotent."""
        if self._backend is not None:
            return
        backend: StateBackend
        if self.url.startswith("sqlite"):
            backend = SqliteState(self.url.split("///", 1)[1] if "///" in self.url else "")
        else:
            backend = SqlAlchemyState(self.url, self.schema)
        await backend.open()
        self._backend = backend

    async def close(self) -> None:
        if self._backend is not None:
            backend, self._backend = self._backend, None
            await backend.close()

    async def __aenter__(self) -> StateStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def put_many(self, writes: list[tuple[str, str, JSON]]) -> None:
        """Write (namespace, key, value) triples in one transaction: durable together when it
        returns, one commit (one fsync on SQLite) for all of them."""
        if writes:
            await self.backend.put_many(_rows(writes), time.time())

    async def put_new_with(self, namespace: str, key: str, value: JSON,
                           writes: list[tuple[str, str, JSON]]) -> bool:
        """Write `value` at `key` only if absent and, if so, `writes` too, in one transaction;
        True when this call wrote them (a claim and what goes with it, durable together)."""
        claim = (_checked(namespace), key, _dumps(value))
        return await self.backend.put_new_with(claim, _rows(writes), time.time())

    def namespace(self, name: str) -> StateNamespace:
        return StateNamespace(self, _checked(name))

    def queue(self, name: str) -> StateQueue:
        return StateQueue(self, _checked(name))


class StateNamespace:
    """Key/values under one namespace; keys are strings, values JSON."""

    def __init__(self, store: StateStore, name: str) -> None:
        self.store = store
        self.name = name

    async def get(self, key: str, default: JSON = None) -> JSON:
        body = await self.store.backend.get(self.name, key)
        return default if body is None else json.loads(body)

    async def put(self, key: str, value: JSON) -> None:
        """Write `value` (replacing what was there); durable when it returns."""
        await self.store.backend.put_many([(self.name, key, _dumps(value))], time.time())

    async def put_new(self, key: str, value: JSON) -> bool:
        """Write `value` only if `key` is absent; True when this call wrote it.

        Two replicas racing for one key: exactly one gets True (a claim, e.g. "I send this").
        """
        return await self.store.backend.put_new_with((self.name, key, _dumps(value)), [],
                                                     time.time())

    async def delete(self, key: str) -> bool:
        return await self.store.backend.delete(self.name, key)

    async def items(self, prefix: str = "", limit: int = 1000, *,
                    start: str | None = None) -> list[tuple[str, JSON]]:
        """(key, value) pairs whose key starts with `prefix`, in key order; with `start`, only
        keys from it on (a log read from a position, a page after the last key seen)."""
        rows = await self.store.backend.items(self.name, prefix, limit, start)
        return [(key, json.loads(value)) for key, value in rows]


class StateQueue:
    """A small durable queue: push, claim what is due for a lease, then finish or reschedule."""

    def __init__(self, store: StateStore, name: str) -> None:
        self.store = store
        self.name = name

    async def push(self, item: JSON, *, delay_s: float = 0.0) -> int:
        """Add `item`, due after `delay_s`; returns its id. Durable when it returns."""
        now = time.time()
        return await self.store.backend.push(self.name, _dumps(item), now + delay_s, now)

    async def claim(self, limit: int = 10, *, lease_s: float = 300.0,
                    due_by: float | None = None) -> list[QueuedItem]:
        """Up to `limit` due items, oldest first, each hidden from other claims for `lease_s`.

        Finish each with `done` or `retry`; one left alone (its claimer died) is due again
        when its lease ends. `due_by` (a time.time() value) claims what is due by then instead
        of now: tests use it to skip a retry's wait.
        """
        now = time.time()
        rows = await self.store.backend.claim(self.name, limit,
                                              now if due_by is None else due_by, now + lease_s)
        return [QueuedItem(item_id, json.loads(item), attempts, created_at)
                for item_id, item, attempts, created_at in rows]

    async def done(self, item_id: int) -> None:
        await self.store.backend.done(item_id)

    async def retry(self, item_id: int, *, delay_s: float, item: JSON = None) -> None:
        """Due again after `delay_s`, one more attempt counted (and `item` replaced if given)."""
        await self.store.backend.retry(item_id, time.time() + delay_s,
                                       None if item is None else _dumps(item))

    async def depth(self) -> int:
        return await self.store.backend.depth(self.name)

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest item is due (0 if one is), None when empty."""
        earliest = await self.store.backend.earliest_due(self.name)
        return None if earliest is None else max(0.0, earliest - time.time())


def _rows(writes: list[tuple[str, str, JSON]]) -> list[Row]:
    """(namespace, key, JSON text), the last value of a key repeated in `writes` kept (one
    statement may not upsert a row twice on PostgreSQL)."""
    rows = {(_checked(namespace), key): _dumps(value) for namespace, key, value in writes}
    return [(namespace, key, body) for (namespace, key), body in rows.items()]


def _dumps(value: JSON) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _checked(name: str) -> str:
    if not name or len(name) > 200:
        raise ValueError(f"a state namespace is 1 to 200 characters, not {name!r}")
    return name
