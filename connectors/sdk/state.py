"""Sessions, devices, the SDK's tickets and messages, and the per-user log, in the state store.

Everything lives in the kernel's connector state store (SQLite under `INTAKE_DATA_DIR`, or
PostgreSQL by `INTAKE_STATE_URL` so replicas share it), in namespaces of its own:

- `sdk:session`: sha256 of a session token → who it is (the token itself is never stored);
- `sdk:device`: `<app>:<sha256 of a device token>` → the device, and who spent it;
- `sdk:claim`: an idempotency key → the request's digest and, once done, its answer;
- `sdk:ticket`: an SDK ticket id → the ticket as the customer sees it;
- `sdk:mine`: `<owner key>:<ticket id>` → the owner's tickets;
- `sdk:message`: `<ticket id>:<seq>` → the ticket's messages, in the owner's log order;
- `sdk:log` / `sdk:head`: the per-user log, `<owner key>:<seq>` → an event, strictly increasing
  per user across their tickets and devices. An append claims the next key with `put_new`, so
  two replicas appending for one user at once get different seqs and neither is lost.

An owner key is a hash of the owner: user ids may hold `:`, and a prefix of one user's keys
must never be a prefix of another's.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from intake import Identity, StateStore

SEQ_DIGITS = 15
SESSION_CACHE_S = 2.0
LOG_RETENTION_S = 30 * 86_400  # a resume from before this gets `reset` (reload over REST)
SESSION_CACHE_SIZE = 50_000
HEAD_CACHE_SIZE = 50_000
Writes = list[tuple[str, str, Any]]  # (namespace, key, value), for StateStore.put_many
LOG_PAGE = 500
# Called with an owner key after each append in this process: the live sockets' wake-up.
APPENDED: list[Callable[[str], None]] = []


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Owner:
    """Whose a session, ticket or log is: a verified user of a namespace, or one device."""

    kind: Literal["user", "device"]
    app: str
    subject: str  # the user id (byte for byte) or the device id
    namespace: str = ""

    @property
    def id(self) -> str:
        if self.kind == "user":
            return f"user:{self.namespace}:{self.subject}"
        return f"device:{self.app}:{self.subject}"

    @property
    def key(self) -> str:
        return hashlib.sha256(self.id.encode()).hexdigest()[:32]

    @property
    def key_part(self) -> str:
        """The owner's part of an idempotency key (`sdk:<app>:<this>:<client_msg_id>`)."""
        if self.kind == "user":
            return f"user:{self.namespace}:{self.subject}"
        return f"device:{self.subject}"

    @property
    def identity(self) -> Identity:
        if self.kind == "user":
            return Identity(kind="sdk_user", value=f"{self.namespace}:{self.subject}",
                            verified=True)
        return Identity(kind="sdk_device", value=f"{self.app}:{self.subject}", verified=False)

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind, "app": self.app, "subject": self.subject,
                "namespace": self.namespace}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Owner:
        return cls(data["kind"], data["app"], data["subject"], data.get("namespace", ""))


@dataclass(frozen=True)
class Session:
    token_hash: str
    app: str
    owner: Owner
    expires_at: float
    display_name: str | None = None
    contact: dict[str, Any] | None = None
    identities: tuple[Identity, ...] = ()  # beyond the owner's: verified email/phone, a device

    @property
    def verified(self) -> bool:
        return self.owner.kind == "user"


class SdkState:
    """The SDK's view of the state store (opened by the service or a test)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.sessions = store.namespace("sdk:session")
        self.devices = store.namespace("sdk:device")
        self.claims = store.namespace("sdk:claim")
        self.tickets = store.namespace("sdk:ticket")
        self.mine = store.namespace("sdk:mine")
        self.messages = store.namespace("sdk:message")
        self.log = store.namespace("sdk:log")
        self.heads = store.namespace("sdk:head")
        # Ticket, message and device ids: random UUIDs (the contract suite fixes them).
        self.new_id: Callable[[], str] = lambda: str(uuid.uuid4())
        self._append_turns: dict[str, asyncio.Lock] = {}
        self._sessions: dict[str, tuple[float, Session]] = {}
        self._heads: dict[str, int] = {}  # the last seq this process appended, per owner
        self._session_reads: dict[str, asyncio.Future[Session | None]] = {}

    # -- sessions ----------------------------------------------------------------------------

    async def open_session(self, app: str, owner: Owner, lifetime_s: float, *,
                           display_name: str | None = None,
                           contact: dict[str, Any] | None = None,
                           identities: list[Identity] | None = None) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = Session(token_hash(token), app, owner, time.time() + lifetime_s,
                          display_name, contact, tuple(identities or ()))
        await self.sessions.put(session.token_hash, {
            "app": app, "owner": owner.as_json(), "expires_at": session.expires_at,
            "display_name": display_name, "contact": contact,
            "identities": [i.model_dump() for i in session.identities]})
        return token, session

    async def session(self, token: str) -> Session | None:
        """The session of `token`, or None when unknown or revoked (expiry is the caller's).

        Kept in memory for `SESSION_CACHE_S`: a revocation is seen at once by this replica and
        within that time by the others.
        """
        hashed = token_hash(token)
        cached = self._sessions.get(hashed)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        # One read per token at a time: a user's sockets (up to `sockets_per_user`) check
        # their session together after a quiet spell, and each read is a state-store hop.
        reading = self._session_reads.get(hashed)
        if reading is None:
            reading = asyncio.ensure_future(self._read_session(hashed))
            self._session_reads[hashed] = reading
            reading.add_done_callback(lambda done: self._session_reads.pop(hashed, None)
                                      if self._session_reads.get(hashed) is done else None)
        return await asyncio.shield(reading)

    async def _read_session(self, hashed: str) -> Session | None:
        data = await self.sessions.get(hashed)
        if data is None:
            self._sessions.pop(hashed, None)
            return None
        session = Session(hashed, data["app"], Owner.from_json(data["owner"]),
                          float(data["expires_at"]), data.get("display_name"),
                          data.get("contact"),
                          tuple(Identity.model_validate(i) for i in data.get("identities", [])))
        if self._session_reads.get(hashed) is not asyncio.current_task():
            return session  # revoked while it was read: not kept
        if len(self._sessions) >= SESSION_CACHE_SIZE:
            self._sessions.pop(next(iter(self._sessions)))
        self._sessions[hashed] = (time.monotonic() + SESSION_CACHE_S, session)
        return session

    async def revoke(self, session: Session) -> None:
        self._sessions.pop(session.token_hash, None)
        self._session_reads.pop(session.token_hash, None)  # a read racing it caches nothing
        await self.sessions.delete(session.token_hash)
        self._sessions.pop(session.token_hash, None)

    # -- devices -----------------------------------------------------------------------------

    async def new_device(self, app: str) -> tuple[str, str]:
        """A new device: (its id, its token). The token (256 bits) is shown once."""
        token = secrets.token_urlsafe(32)
        device_id = self.new_id()
        await self.devices.put(f"{app}:{token_hash(token)}", {"device_id": device_id})
        return device_id, token

    async def device(self, app: str, token: str) -> dict[str, Any] | None:
        data = await self.devices.get(f"{app}:{token_hash(token)}")
        return data if isinstance(data, dict) else None

    async def spend_device(self, app: str, token: str, user: Owner) -> str | None:
        """Give a device's tickets to the verified `user` signing in on it; the token is spent.

        Returns the device id when this call spent it, None when the token is unknown or spent.
        """
        data = await self.device(app, token)
        if data is None or data.get("spent_by"):
            return None
        if not await self.devices.put_new(f"spent:{app}:{token_hash(token)}", user.id):
            return None
        device = Owner("device", app, str(data["device_id"]))
        for key, _ in await self.mine.items(device.key + ":", limit=10_000):
            ticket_id = key.split(":", 1)[1]
            ticket = await self.tickets.get(ticket_id)
            if ticket is not None:
                ticket["owner"] = user.as_json()
                await self.tickets.put(ticket_id, ticket)
                await self.mine.put(f"{user.key}:{ticket_id}", 1)
            await self.mine.delete(key)
        await self.devices.put(f"{app}:{token_hash(token)}", {**data, "spent_by": user.id})
        return str(data["device_id"])

    # -- idempotency claims ------------------------------------------------------------------

    async def claim(self, key: str, digest: str,
                    ids: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Claim `key` for a request with `digest` (and the `ids` its message will carry);
        None when this call is the first.

        Otherwise the existing claim: `{"digest", "ids", "result"?, "at", …}`.
        """
        fresh = {"digest": digest, "ids": ids or {}, "at": time.time()}
        if await self.claims.put_new(key, fresh):
            return None
        existing = await self.claims.get(key)
        return existing if isinstance(existing, dict) else fresh

    async def update_claim(self, key: str, value: dict[str, Any]) -> None:
        await self.claims.put(key, value)

    # -- tickets and messages ----------------------------------------------------------------

    @staticmethod
    def ticket_writes(ticket: dict[str, Any], *, listed: bool = False) -> Writes:
        """The ticket, and its owner's index entry unless it is `listed` there already."""
        writes: Writes = [("sdk:ticket", ticket["id"], ticket)]
        if not listed:
            owner = Owner.from_json(ticket["owner"])
            writes.append(("sdk:mine", f"{owner.key}:{ticket['id']}", 1))
        return writes

    @staticmethod
    def message_write(ticket_id: str, seq: int, message: dict[str, Any]) -> tuple[str, str, Any]:
        return ("sdk:message", f"{ticket_id}:{seq:0{SEQ_DIGITS}d}", message)

    async def put_ticket(self, ticket: dict[str, Any]) -> None:
        await self.store.put_many(self.ticket_writes(ticket))

    async def ticket(self, ticket_id: str) -> dict[str, Any] | None:
        data = await self.tickets.get(ticket_id)
        return data if isinstance(data, dict) else None

    async def tickets_of(self, owner: Owner) -> list[dict[str, Any]]:
        found = []
        for key, _ in await self.mine.items(owner.key + ":", limit=100_000):
            ticket = await self.ticket(key.split(":", 1)[1])
            if ticket is not None:
                found.append(ticket)
        return found

    async def put_message(self, ticket_id: str, seq: int, message: dict[str, Any]) -> None:
        await self.messages.put(f"{ticket_id}:{seq:0{SEQ_DIGITS}d}", message)

    async def messages_of(self, ticket_id: str) -> list[dict[str, Any]]:
        return [m for _, m in await self.messages.items(ticket_id + ":", limit=100_000)]

    async def add_message(self, owner: Owner, ticket_id: str, view: dict[str, Any], *,
                          device: str | None = None,
                          also: Callable[[int], Writes] | None = None,
                          ticket: dict[str, Any] | None = None) -> int:
        """Append a message to the owner's log and to its ticket; its seq. `ticket`: the
        ticket as the caller has just read it (saves reading it again)."""
        if ticket is None:
            ticket = await self.ticket(ticket_id)
        agent_seqs = list(ticket.get("agent_seqs", [])) if ticket is not None else []

        def writes(seq: int) -> Writes:  # called again with the next seq if this one was taken
            stored = {**view, "seq": seq}
            found: Writes = [self.message_write(ticket_id, seq, stored)]
            if ticket is not None:
                ticket["last_message"] = {"text": view["text"][:200],
                                          "direction": view["direction"],
                                          "created_at": view["created_at"], "seq": seq}
                ticket["updated_at"] = view["created_at"]
                if view["direction"] == "agent":
                    ticket["agent_seqs"] = [*agent_seqs, seq]
                found += self.ticket_writes(ticket, listed=True)
            return [*found, *(also(seq) if also else [])]

        return await self.append(owner, {"type": "message.created", "ticket_id": ticket_id,
                                         "message": view, "device": device}, then=writes)

    # -- the per-user log --------------------------------------------------------------------

    async def append(self, owner: Owner, event: dict[str, Any],
                     then: Callable[[int], Writes] | None = None) -> int:
        """Append `event` to the owner's log; its seq, strictly above every earlier one.

        `then(seq)` gives the writes that go with it (the message, its ticket), made in one
        transaction with the head hint before anyone is woken. Appends of one owner take turns
        in this process (no probing past each other's keys); another replica's append is found
        by `put_new` and probed past.
        """
        lock = self._append_turns.setdefault(owner.key, asyncio.Lock())
        try:
            async with lock:
                return await self._append(owner, event, then)
        finally:
            if not lock.locked() and not lock._waiters:  # type: ignore[attr-defined]
                self._append_turns.pop(owner.key, None)

    async def _append(self, owner: Owner, event: dict[str, Any],
                      then: Callable[[int], Writes] | None) -> int:
        known = self._heads.get(owner.key)
        seq = (known if known is not None else int(await self.heads.get(owner.key, 0))) + 1
        # The entry, the head (a hint: a lagging one only costs probes) and what goes along,
        # in one transaction, only if this seq is still free.
        while not await self.store.put_new_with(
                "sdk:log", f"{owner.key}:{seq:0{SEQ_DIGITS}d}",
                {**event, "seq": seq, "at": time.time()},
                [("sdk:head", owner.key, seq), *(then(seq) if then else [])]):
            seq += 1  # another writer (a replica) took this one: the next is ours to try
        if len(self._heads) >= HEAD_CACHE_SIZE:
            self._heads.pop(next(iter(self._heads)))
        self._heads[owner.key] = seq
        for wake in APPENDED:
            wake(owner.key)
        return seq

    async def prune(self, now: float | None = None, *, page: int = 1000) -> int:
        """Remove log events older than LOG_RETENTION_S, expired sessions and unused uploads
        past their expiry (their blobs stay: a message may carry them); how many went."""
        now = time.time() if now is None else now
        removed = 0
        for namespace, expired in (
                (self.log, lambda v: float(v.get("at", now)) < now - LOG_RETENTION_S),
                (self.sessions, lambda v: float(v.get("expires_at", now)) < now),
                (self.store.namespace("sdk:upload"),
                 lambda v: float(v.get("expires_at", now)) < now)):
            start: str | None = None
            while True:
                items = await namespace.items("", page + 1, start=start)
                fresh = [(k, v) for k, v in items if start is None or k != start]
                for key, value in fresh:
                    if isinstance(value, dict) and expired(value):
                        removed += int(await namespace.delete(key))
                if len(items) <= page or not fresh:
                    break
                start = fresh[-1][0]  # the next page starts here (this key itself skipped)
        self._sessions.clear()
        return removed

    async def head(self, owner: Owner) -> int:
        seq = int(await self.heads.get(owner.key, 0))
        while await self.log.get(f"{owner.key}:{seq + 1:0{SEQ_DIGITS}d}") is not None:
            seq += 1
        return seq

    async def events_after(self, owner: Owner, after: int,
                           limit: int = LOG_PAGE) -> list[dict[str, Any]]:
        """The owner's events with seq > `after`, in order, at most `limit`: always read from
        the log. (Serving a push from the entries this process had just appended saved a read,
        but could end a page at this process's latest entry while another replica had already
        appended the next one: a page short of the log, seen once in a loaded test run.)"""
        start = f"{owner.key}:{after + 1:0{SEQ_DIGITS}d}"
        return [event for _, event in await self.log.items(owner.key + ":", limit, start=start)]


def customer_view(ticket: dict[str, Any]) -> dict[str, Any]:
    """A stored ticket as its owner sees it in lists and `ticket.updated` events."""
    read_seq = int(ticket.get("read_seq", 0))
    return {"id": ticket["id"], "reference": ticket.get("reference"),
            "number": ticket.get("number"), "kind": ticket["kind"],
            "subject": ticket.get("subject"), "status": ticket.get("status"),
            "created_at": ticket["created_at"], "updated_at": ticket["updated_at"],
            "unread": sum(1 for s in ticket.get("agent_seqs", []) if s > read_seq),
            "last_message": ticket.get("last_message")}
