"""Live chat over WebSocket: hello, resume from the per-user log, acks once durable.

Every durable event of a user has a `seq` in their log (`state.py`). A socket starts after
the `after` its client sends (each retained event with a higher seq replayed in order, then
`synced`) and from then on pushes whatever the log gains, reading the log itself, so no
event is skipped or sent twice whichever process wrote it. The log is woken in-process by
`state.APPENDED`, and across replicas by `intake.sdk.fanout` (`outbound.LiveFanout`); the
log is also read every `FANOUT_POLL_S` (`POLL_S` without a bus) as a safety net.

Protocol errors close the socket with a code (4400 a bad frame, 4401 no or a bad hello, 1003
binary, 1009 over 64 KiB, 4429 too many sockets, 1001 shutdown); a well-formed frame refused
gets an `error` frame and the socket stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
import weakref
from collections import defaultdict
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from intake import IntakeError, Rejected, Transient, get_logger

from .. import state as state_module
from ..errors import BodyMalformed
from ..settings import SdkApp
from ..state import Session
from . import tickets
from .http import check_origin, parse_json
from .identity import session_of
from .runtime import Runtime, runtime_of

HELLO_TIMEOUT_S = 10.0
HEARTBEAT_S = 20.0
MAX_FRAME = 64 * 1024
POLL_S = 1.0  # without a bus (tests): the log is read this often for other writers
FANOUT_POLL_S = 10.0  # with the fan-out: a safety net only (a wake lost while reconnecting)
SESSION_CHECK_S = 5.0  # a revoked session's sockets close within this (on their next frame)
RETENTION_S = 30 * 86_400
BAD_FRAME, UNAUTHORIZED, TOO_MANY = 4400, 4401, 4429
FRAME_ERRORS = {"not_found", "too_long", "invalid_text", "rate_limited",
                "idempotency_conflict", "invalid_attachment", "missing"}
log = get_logger(service="sdk", component="socket")


class ProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Live:
    """One open socket of a user: pushes its user's log from a cursor on."""

    def __init__(self, ws: web.WebSocketResponse, session: Session, token: str,
                 runtime: Runtime) -> None:
        self.ws = ws
        self.session = session
        self.token = token
        self.checked_at = time.monotonic()
        self.runtime = runtime
        self.id = uuid.uuid4().hex
        self.cursor = 0
        self.wake = asyncio.Event()
        self.sending = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> None:
        async with self.sending:
            await self.ws.send_str(orjson.dumps(frame).decode())

    async def push_forever(self) -> None:
        while not self.ws.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(),
                                       FANOUT_POLL_S if HUB.fanout else POLL_S)
            self.wake.clear()
            await self.push()

    async def push(self) -> None:
        while True:
            events = await self.runtime.state.events_after(self.session.owner, self.cursor)
            delivered = []
            for event in events:
                self.cursor = int(event["seq"])
                frame = frame_of(event)
                if frame is not None and event.get("device") != self.id:
                    await self.send(frame)
                    if frame["type"] == "message.created" and (
                            frame["message"].get("direction") == "agent"):
                        delivered.append(str(frame["message"]["id"]))
            if delivered:
                await self.runtime.receipts.report(self.session.app, delivered, "delivered")
            if len(events) < state_module.LOG_PAGE:
                return


def frame_of(event: dict[str, Any]) -> dict[str, Any] | None:
    kind = event.get("type")
    if kind == "message.created":
        return {"type": "message.created", "seq": event["seq"], "ticket_id": event["ticket_id"],
                "message": {**event["message"], "seq": event["seq"]}}
    if kind == "ticket.updated":
        return {"type": "ticket.updated", "seq": event["seq"], "ticket_id": event["ticket_id"],
                "ticket": event["ticket"]}
    return None


class Hub:
    """The sockets of this process, by owner key."""

    def __init__(self) -> None:
        self.sockets: dict[str, set[Live]] = defaultdict(set)
        self.all: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self.fanout = False  # True once the replicas' fan-out runs (outbound.LiveFanout)

    def wake(self, owner_key: str) -> None:
        for live in self.sockets.get(owner_key, ()):
            live.wake.set()

    def add(self, live: Live, limit: int) -> bool:
        mine = self.sockets[live.session.owner.key]
        if len(mine) >= limit:
            return False
        mine.add(live)
        return True

    def remove(self, live: Live) -> None:
        mine = self.sockets.get(live.session.owner.key)
        if mine is not None:
            mine.discard(live)
            if not mine:
                del self.sockets[live.session.owner.key]


HUB = Hub()
state_module.APPENDED.append(HUB.wake)


async def close_all(app: web.Application) -> None:
    """At shutdown: every socket closed with 1001 (going away); clients resume elsewhere."""
    for ws in list(HUB.all):
        with contextlib.suppress(Exception):
            await ws.close(code=1001, message=b"server shutting down")


async def handle(request: web.Request) -> web.StreamResponse:
    try:
        runtime = await runtime_of(request)
        app = runtime.app(request.match_info["app"])
        check_origin(request, app)  # Cross-Site WebSocket Hijacking: 403 before the upgrade
    except IntakeError as exc:
        from intake import error_answer

        return error_answer(exc, "sdk")
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_FRAME)
    await ws.prepare(request)
    HUB.all.add(ws)
    live: Live | None = None
    pusher: asyncio.Task[None] | None = None
    try:
        session, token, after = await hello(ws, runtime, app)
        live = Live(ws, session, token, runtime)
        if not HUB.add(live, app.sockets_per_user):
            raise ProtocolError(TOO_MANY, "too many sockets for this user")
        head = await runtime.state.head(session.owner)
        await live.send({"type": "welcome", "user": {
            "id": session.owner.subject if session.verified else None,
            "verified": session.verified}, "seq": head})
        live.cursor = head if after is None else await resume_from(live, after)
        if after is not None:
            await live.push()
        await live.send({"type": "synced", "seq": live.cursor})
        pusher = asyncio.create_task(live.push_forever())
        await read_frames(ws, live, request, app)
    except ProtocolError as exc:
        await ws.close(code=exc.code, message=exc.reason.encode()[:120])
    finally:
        if pusher is not None:
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pusher
        if live is not None:
            HUB.remove(live)
        if not ws.closed:
            await ws.close()
    return ws


async def resume_from(live: Live, after: int) -> int:
    """The cursor to replay from; an `after` older than the retained log gets a reset."""
    first = await live.runtime.state.events_after(live.session.owner, 0, limit=1)
    if first and after < int(first[0]["seq"]) - 1:
        await live.send({"type": "reset"})
        return await live.runtime.state.head(live.session.owner)
    return after


async def next_frame(ws: web.WebSocketResponse, timeout: float | None = None
                     ) -> dict[str, Any] | None:
    """The next JSON object frame; None when the socket closed; ProtocolError otherwise."""
    message = await ws.receive(timeout=timeout)
    if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
        return None
    if message.type == WSMsgType.ERROR:
        return None  # aiohttp closed it with its code (1009 too big, 1007 bad UTF-8)
    if message.type == WSMsgType.BINARY:
        raise ProtocolError(1003, "binary frames are not accepted")
    if message.type != WSMsgType.TEXT:
        return None
    try:
        frame = parse_json(message.data)
    except BodyMalformed as exc:
        raise ProtocolError(BAD_FRAME, "not JSON") from exc
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
        raise ProtocolError(BAD_FRAME, "a frame is a JSON object with a type")
    return frame


async def hello(ws: web.WebSocketResponse, runtime: Runtime, app: SdkApp
                ) -> tuple[Session, str, int | None]:
    try:
        frame = await next_frame(ws, HELLO_TIMEOUT_S)
    except TimeoutError as exc:
        raise ProtocolError(UNAUTHORIZED, "no hello within 10 s") from exc
    if frame is None:
        raise ProtocolError(1000, "closed")
    if frame["type"] != "hello":
        raise ProtocolError(UNAUTHORIZED, "hello first")
    token, after = frame.get("session_token"), frame.get("after")
    if not isinstance(token, str):
        raise ProtocolError(UNAUTHORIZED, "hello needs a session_token")
    if after is not None and (not isinstance(after, int) or isinstance(after, bool)
                              or after < 0):
        raise ProtocolError(BAD_FRAME, "after is a non-negative integer")
    try:
        session = await session_of(runtime.state, app, f"Bearer {token}")
    except Rejected as exc:
        raise ProtocolError(UNAUTHORIZED, exc.reason) from exc
    return session, token, after


async def read_frames(ws: web.WebSocketResponse, live: Live, request: web.Request,
                      app: SdkApp) -> None:
    runtime = live.runtime
    while True:
        frame = await next_frame(ws)
        if frame is None:
            return
        if time.monotonic() > live.checked_at + SESSION_CHECK_S:
            live.checked_at = time.monotonic()
            if (live.session.expires_at <= time.time()
                    or await runtime.state.session(live.token) is None):
                raise ProtocolError(UNAUTHORIZED, "session_expired")
        kind = frame["type"]
        if kind == "ping":
            await live.send({"type": "pong"})
        elif kind == "message":
            await on_message(live, request, app, frame)
        elif kind == "typing":
            _typing_frame(frame)  # checked, then dropped until an agent side exists
        elif kind == "read":
            await on_read(live, frame)
        else:
            raise ProtocolError(BAD_FRAME, f"unknown frame type {kind[:40]!r}")


def _typing_frame(frame: dict[str, Any]) -> None:
    if not isinstance(frame.get("ticket_id"), str) or frame.get("state") not in ("start",
                                                                                 "stop"):
        raise ProtocolError(BAD_FRAME, "typing needs ticket_id and state start|stop")


async def on_message(live: Live, request: web.Request, app: SdkApp,
                     frame: dict[str, Any]) -> None:
    client_msg_id, text = frame.get("client_msg_id"), frame.get("text")
    ticket_id, attachments = frame.get("ticket_id"), frame.get("attachments")
    if not isinstance(client_msg_id, str) or not isinstance(text, str):
        raise ProtocolError(BAD_FRAME, "a message needs client_msg_id and text as strings")
    if ticket_id is not None and not isinstance(ticket_id, str):
        raise ProtocolError(BAD_FRAME, "ticket_id is a string")
    if attachments is not None and not (isinstance(attachments, list)
                                        and all(isinstance(a, str) for a in attachments)):
        raise ProtocolError(BAD_FRAME, "attachments is a list of upload ids")
    body = {"client_msg_id": client_msg_id, "text": text, "attachments": attachments}
    try:
        result, _ = await tickets.post_message(live.runtime, request.app, app, live.session,
                                               ticket_id, body, device=live.id)
    except Rejected as exc:
        if exc.reason == "invalid_client_msg_id":
            raise ProtocolError(BAD_FRAME, "client_msg_id is 1-64 of [A-Za-z0-9_-]") from exc
        await live.send(_error(exc.reason, str(exc), client_msg_id,
                               getattr(exc, "retry_after_s", None)))
        return
    except Transient as exc:
        await live.send(_error("unavailable", str(exc), client_msg_id, exc.retry_after_s))
        return
    await live.send({"type": "ack", **result})


def _error(code: str, message: str, client_msg_id: str | None,
           retry_after_s: float | None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code if code in FRAME_ERRORS
                             else "invalid", "message": message}
    if client_msg_id is not None:
        frame["client_msg_id"] = client_msg_id
    if retry_after_s is not None:
        frame["retry_after_ms"] = int(retry_after_s * 1000)
    return frame


async def on_read(live: Live, frame: dict[str, Any]) -> None:
    ticket_id, seq = frame.get("ticket_id"), frame.get("seq")
    if not isinstance(ticket_id, str) or not isinstance(seq, int) or isinstance(seq, bool):
        raise ProtocolError(BAD_FRAME, "read needs ticket_id and an integer seq")
    try:
        await tickets.mark_read(live.runtime, live.session, ticket_id, {"seq": seq})
    except Rejected as exc:
        await live.send(_error(exc.reason, str(exc), None, None))
