"""`GET /api/v1/events`: the event log as Server-Sent Events, for agent UIs.

Each event is `id: <id>`, `event: <type>`, `data: <envelope JSON>`; a `:` comment every 15 s
keeps proxies from closing an idle stream. `Last-Event-ID` (or `?last_event_id=`) resumes
after that id: ids become visible in order (db.EVENT_COUNTER), so reading `id > last` misses
nothing and repeats nothing. Without one the stream starts at the end of the log. `?types=`
filters by type with `*` wildcards (`ticket.*`); `?agent=` keeps the call events whose
`data.agents` is empty or names that agent (a pop goes to whose phone rings). New rows wake
the stream on commit (`TicketStore.changes`); another process's commits are seen by polling.
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from intake.errors import StorageUnavailable
from intake.http import error_response
from intake.logging import get_logger

from .events import TypeFilter, envelope, for_agent
from .store import Changes, TicketStore

KEEPALIVE_S = 15.0
POLL_S = 0.5
BATCH = 500

log = get_logger(component="event_stream")


def _last_event_id(request: web.Request) -> int | None:
    given = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if given is None or not given.strip():
        return None
    value = given.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise ValueError(value)
    return int(value)


def _ended(request: web.Request) -> bool:
    """The client went away, or the server is shutting down.

    aiohttp no longer cancels a handler whose client left, and at shutdown it waits for open
    handlers (up to the shutdown timeout) after marking their connections closing
    (`Server.pre_shutdown` sets the protocol's `_close`, which it has no public view of):
    a stream that did not look would hold a SIGTERM for that long.
    """
    transport = request.transport
    return (transport is None or transport.is_closing()
            or bool(getattr(request.protocol, "_close", False)))


def events_handler(store: TicketStore, *, keepalive_s: float = KEEPALIVE_S,
                   poll_s: float = POLL_S) -> web.RouteDef:
    async def stream(request: web.Request) -> web.StreamResponse:
        unknown = {name: "unknown parameter; known: last_event_id, types, agent"
                   for name in request.query
                   if name not in ("last_event_id", "types", "agent")}
        agent = request.query.get("agent") or None
        try:
            last = _last_event_id(request)
        except ValueError:
            unknown["last_event_id"] = "an event id (digits) from a previous `id:` line"
            last = None
        if unknown:
            return error_response(400, "invalid_parameter",
                                  "Some query parameters are not valid.", unknown)
        wanted = TypeFilter.parse(request.query.get("types"))
        try:
            if last is None:
                last = await store.last_event_id()
        except StorageUnavailable:
            return error_response(503, "storage_unavailable",
                                  "The ticket database is not reachable; try again shortly.",
                                  headers={"Retry-After": "2"})
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"})
        await response.prepare(request)
        await response.write(b": stream of the ticket core's event log\nretry: 2000\n\n")
        quiet_since = time.monotonic()
        try:
            while not _ended(request):
                token = store.changes.token()
                try:
                    rows = await store.events_after(last, BATCH)
                except StorageUnavailable:
                    rows = []
                if rows:
                    chunk = bytearray()
                    for row in rows:
                        last = row.id
                        if wanted(row.type) and for_agent(row, agent):
                            chunk += (f"id: {row.id}\nevent: {row.type}\ndata: ".encode()
                                      + orjson.dumps(envelope(row)) + b"\n\n")
                    if chunk:
                        await response.write(bytes(chunk))
                        quiet_since = time.monotonic()
                    if len(rows) == BATCH:
                        continue
                if time.monotonic() - quiet_since >= keepalive_s:
                    await response.write(b": keepalive\n\n")
                    quiet_since = time.monotonic()
                await Changes.wait(token, min(poll_s, keepalive_s))
        except ConnectionResetError:  # the agent's UI went away
            pass
        return response

    return web.get("/api/v1/events", stream)
