"""The async client: sessions (re-identified once on expiry), tickets, FAQ, uploads, chat.

Chat keeps unsent messages, with their `client_msg_id`, and its cursor in a small SQLite file
(`state_path`; in memory by default), so a message typed offline is sent on reconnect, once,
and a reconnect resumes every event after the last one seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

RETRY_IDENTITY = {"token_expired", "session_expired"}
Identify = Callable[[], "dict[str, str] | Awaitable[dict[str, str] | None] | None"]


def user_hash(secret: str, user_id: str) -> str:
    """What a company's backend computes for a user id (never ship the secret in an app)."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


class IntakeError(Exception):
    def __init__(self, status: int, body: dict[str, Any] | None) -> None:
        body = body or {}
        super().__init__(body.get("message") or f"HTTP {status}")
        self.status = status
        self.code = body.get("error", "http_error")
        self.fields = body.get("fields", {})


class Store:
    """Small local state: the device token, the chat cursor, the offline queue."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self.db = sqlite3.connect(str(path), check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT)")
        self.db.execute("CREATE TABLE IF NOT EXISTS outbox (client_msg_id TEXT PRIMARY KEY,"
                        " frame TEXT, added INTEGER)")
        self.db.commit()

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str | None) -> None:
        if value is None:
            self.db.execute("DELETE FROM kv WHERE k = ?", (key,))
        else:
            self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, value))
        self.db.commit()

    def queue(self, frame: dict[str, Any]) -> None:
        self.db.execute("INSERT OR IGNORE INTO outbox VALUES (?, ?, strftime('%s','now'))",
                        (frame["client_msg_id"], json.dumps(frame, ensure_ascii=False)))
        self.db.commit()

    def unsent(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT frame FROM outbox ORDER BY rowid").fetchall()
        return [json.loads(row[0]) for row in rows]

    def sent(self, client_msg_id: str) -> None:
        self.db.execute("DELETE FROM outbox WHERE client_msg_id = ?", (client_msg_id,))
        self.db.commit()

    def wipe(self) -> None:
        self.db.execute("DELETE FROM kv")
        self.db.execute("DELETE FROM outbox")
        self.db.commit()


class IntakeClient:
    def __init__(self, base_url: str, app_key: str, *, identify: Identify | None = None,
                 state_path: str | Path = ":memory:") -> None:
        self.base_url = base_url.rstrip("/")
        self.app_key = app_key
        self.identify = identify or (lambda: None)
        self.store = Store(state_path)
        self.session: dict[str, Any] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._chat: Chat | None = None

    @property
    def base(self) -> str:
        return f"{self.base_url}/sdk/v1/apps/{self.app_key}"

    def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession()
        return self._http

    async def close(self) -> None:
        if self._chat is not None:
            await self._chat.close()
        if self._http is not None:
            await self._http.close()

    async def _who(self) -> dict[str, str] | None:
        who = self.identify()
        if asyncio.iscoroutine(who):
            who = await who
        return who  # type: ignore[return-value]

    async def token(self) -> str:
        if self.session is None:
            who = await self._who()
            body: dict[str, Any] = {}
            if who and who.get("jwt"):
                body["jwt"] = who["jwt"]
            elif who and who.get("user_id"):
                body["user"] = {"id": who["user_id"]}
                if who.get("user_hash"):
                    body["user_hash"] = who["user_hash"]
            device = self.store.get("device_token")
            if device:
                body["device_token"] = device
            elif "jwt" not in body and "user_hash" not in body:
                body["anonymous"] = True
            async with self.http().post(f"{self.base}/sessions", json=body) as response:
                answer = await response.json()
                if response.status != 201:
                    raise IntakeError(response.status, answer)
            if answer.get("device_token"):
                self.store.put("device_token", answer["device_token"])
            owner = f"user:{answer['user']['id']}" if answer["user"]["verified"] else "device"
            previous = self.store.get("owner")
            if previous is not None and previous != owner:
                # Another person on this program: nothing of the last one's goes on.
                self.store.put("cursor", None)
                self.store.db.execute("DELETE FROM outbox")
            self.store.put("owner", owner)
            self.session = answer
        return str(self.session["session_token"])

    async def call(self, method: str, path: str, body: Any = None, *, retried: bool = False,
                   data: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {await self.token()}"}
        async with self.http().request(method, self.base + path, json=body, data=data,
                                       headers=headers) as response:
            text = await response.text()
            answer = json.loads(text) if text else None
            if (response.status == 401 and not retried and isinstance(answer, dict)
                    and answer.get("error") in RETRY_IDENTITY):
                self.session = None
                return await self.call(method, path, body, retried=True, data=data)
            if response.status >= 400:
                raise IntakeError(response.status, answer)
            return answer

    async def upload(self, content: bytes, filename: str) -> dict[str, Any]:
        form = aiohttp.FormData()
        form.add_field("file", content, filename=filename)
        return await self.call("POST", "/uploads", data=form)  # type: ignore[no-any-return]

    async def submit_ticket(self, *, text: str, subject: str | None = None,
                            fields: dict[str, Any] | None = None,
                            files: list[tuple[str, bytes]] = (),  # type: ignore[assignment]
                            client_msg_id: str | None = None) -> dict[str, Any]:
        attachments = [(await self.upload(data, name))["upload_id"] for name, data in files]
        return await self.call("POST", "/tickets", {  # type: ignore[no-any-return]
            "client_msg_id": client_msg_id or str(uuid.uuid4()), "subject": subject,
            "text": text, "fields": fields or {}, "attachments": attachments})

    async def tickets(self, cursor: str | None = None) -> dict[str, Any]:
        return await self.call("GET", "/tickets" + (f"?cursor={cursor}" if cursor else ""))  # type: ignore[no-any-return]

    async def ticket(self, ticket_id: str) -> dict[str, Any]:
        return await self.call("GET", f"/tickets/{ticket_id}")  # type: ignore[no-any-return]

    async def rate(self, ticket_id: str, score: int, comment: str = "") -> dict[str, Any]:
        return await self.call("POST", f"/tickets/{ticket_id}/satisfaction",  # type: ignore[no-any-return]
                               {"score": score, "comment": comment})

    async def search_faq(self, q: str, limit: int = 10) -> dict[str, Any]:
        async with self.http().get(f"{self.base}/faq/search",
                                   params={"q": q, "limit": str(limit)}) as response:
            answer = await response.json()
            if response.status >= 400:
                raise IntakeError(response.status, answer)
            return answer  # type: ignore[no-any-return]

    async def chat(self) -> Chat:
        if self._chat is None:
            self._chat = Chat(self)
            self._chat.start()
        return self._chat

    async def logout(self) -> None:
        if self._chat is not None:
            await self._chat.close()
            self._chat = None
        if self.session is not None:
            with contextlib.suppress(IntakeError, aiohttp.ClientError):
                await self.call("DELETE", "/sessions/current")
        self.session = None
        self.store.wipe()


class Chat:
    """The live socket: acks once durable, an offline queue, resume from the cursor."""

    def __init__(self, client: IntakeClient) -> None:
        self.client = client
        self.live = asyncio.Event()
        self.acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.handlers: dict[str, list[Callable[[dict[str, Any]], Any]]] = {}
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    def on(self, kind: str, handler: Callable[[dict[str, Any]], Any]) -> None:
        self.handlers.setdefault(kind, []).append(handler)

    def on_message(self, handler: Callable[[dict[str, Any]], Any]) -> None:
        self.on("message.created", handler)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    @property
    def cursor(self) -> int:
        return int(self.client.store.get("cursor") or 0)

    def _advance(self, seq: int) -> None:
        if seq > self.cursor:
            self.client.store.put("cursor", str(seq))

    async def send(self, text: str, *, ticket_id: str | None = None,
                   attachments: list[str] | None = None) -> dict[str, Any]:
        """The ack once the message is durable; kept and resent while offline."""
        frame: dict[str, Any] = {"type": "message", "client_msg_id": str(uuid.uuid4()),
                                 "text": text}
        if ticket_id:
            frame["ticket_id"] = ticket_id
        if attachments:
            frame["attachments"] = attachments
        self.client.store.queue(frame)
        future = self.acks[frame["client_msg_id"]] = asyncio.get_running_loop().create_future()
        if self.live.is_set() and self.ws is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_json(frame)
        return await future

    async def _run(self) -> None:
        attempt = 0
        while not self.closed:
            try:
                await self._connect_once()
                attempt = 0
            except (TimeoutError, aiohttp.ClientError, OSError, IntakeError):
                pass  # offline, or the server restarting: try again after a backoff
            self.live.clear()
            if self.closed:
                return
            attempt += 1
            await asyncio.sleep(min(30.0, 0.25 * 2 ** attempt) * (0.5 + random.random() / 2))

    async def _connect_once(self) -> None:
        token = await self.client.token()
        url = self.client.base.replace("http", "ws", 1) + "/ws"
        async with self.client.http().ws_connect(url, heartbeat=20) as ws:
            self.ws = ws
            hello: dict[str, Any] = {"type": "hello", "session_token": token}
            if self.cursor:
                hello["after"] = self.cursor
            await ws.send_json(hello)
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                await self._frame(ws, json.loads(message.data))
            if ws.close_code == 4401:
                self.client.session = None
        self.ws = None

    async def _frame(self, ws: aiohttp.ClientWebSocketResponse, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "synced":
            self._advance(int(frame["seq"]))
            self.live.set()
            for queued in self.client.store.unsent():
                await ws.send_json(queued)
        elif kind == "reset":
            self.client.store.put("cursor", None)
        elif kind == "ack":
            self.client.store.sent(frame["client_msg_id"])
            self._advance(int(frame.get("seq") or 0))
            future = self.acks.pop(frame["client_msg_id"], None)
            if future is not None and not future.done():
                future.set_result(frame)
        elif kind in ("message.created", "ticket.updated"):
            self._advance(int(frame["seq"]))
        elif kind == "error" and frame.get("client_msg_id") and frame.get("code") not in (
                "rate_limited", "unavailable"):
            self.client.store.sent(frame["client_msg_id"])
            future = self.acks.pop(frame["client_msg_id"], None)
            if future is not None and not future.done():
                future.set_exception(IntakeError(422, {"error": frame["code"],
                                                       "message": frame.get("message")}))
        for handler in self.handlers.get(str(kind), []):
            result = handler(frame)
            if asyncio.iscoroutine(result):
                await result

    async def close(self) -> None:
        self.closed = True
        if self.ws is not None:
            await self.ws.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
