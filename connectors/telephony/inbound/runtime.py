"""What the telephony edge runs on: the journal and machines (a resource of the service), the
timer task that records settled calls and closes timed-out ones, and the per-line metrics."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from functools import partial

from aiohttp import web
from prometheus_client import Counter, Gauge, Histogram

from intake import (
    ACCOUNTS,
    BLOBS,
    PUBLISHER,
    SERVICE_SETTINGS,
    SETTINGS,
    StateStore,
    get_logger,
)

from ..client import RecordingFetcher
from ..settings import AmiLine, EslLine, TelephonyAccounts, TelephonySettings
from ..state import TelephonyState

TELEPHONY = web.AppKey("telephony", TelephonyState)
FETCHER = web.AppKey("telephony_recordings", RecordingFetcher)

EVENTS_IN = Counter("intake_telephony_events_total", "Call events received, per line",
                    ["service", "line"])
DUPLICATES = Counter("intake_telephony_duplicates_total",
                     "Call events that were duplicates (repeated webhook id or content)",
                     ["service", "line"])

LIVE_CALLS = Gauge("intake_telephony_live_calls", "Calls not yet recorded, per line",
                   ["service", "line"])
RECONNECTS = Counter("intake_telephony_reconnects_total",
                     "PBX connections lost or refused (AMI, ESL), per line", ["service", "line"])
PROGRESS_SECONDS = Histogram(
    "intake_telephony_progress_seconds",
    "A webhook's events received → journaled and their progress durable", ["service", "line"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5))

log = get_logger(service="telephony")

# An app built without this channel's context (the contract suite builds the routes alone)
# gets an in-memory journal of its own, made on its first request.
_FALLBACK: weakref.WeakKeyDictionary[web.Application, TelephonyState] = (
    weakref.WeakKeyDictionary())
_FALLBACK_LOCK = asyncio.Lock()


def build_state(app: web.Application, store: StateStore) -> tuple[TelephonyState,
                                                                    RecordingFetcher]:
    settings: TelephonySettings = app[SERVICE_SETTINGS]  # type: ignore[assignment]
    accounts: TelephonyAccounts = app[ACCOUNTS]  # type: ignore[assignment]
    lines = {line.id: line for line in accounts.lines}
    fetcher = RecordingFetcher(lines, app[BLOBS], store.queue("telephony:recordings"),
                               app[PUBLISHER])
    state = TelephonyState(list(lines.values()), store, app[PUBLISHER],
                           journal_keep_s=settings.journal_keep_s,
                           webhook_id_ttl_s=settings.webhook_id_ttl_s, recordings=fetcher)
    return state, fetcher


async def telephony_context(app: web.Application) -> AsyncIterator[None]:
    """The journal (the kernel's state store), rebuilt into live calls before any request."""
    state, fetcher = build_state(app, StateStore.from_settings(app[SETTINGS]))
    await state.open()
    app[TELEPHONY] = state
    app[FETCHER] = fetcher
    yield
    await fetcher.close()
    await state.close()


async def telephony_state(app: web.Application) -> TelephonyState:
    state = app.get(TELEPHONY)
    if state is not None:
        return state
    async with _FALLBACK_LOCK:
        state = _FALLBACK.get(app)
        if state is None:
            state, _fetcher = build_state(app, StateStore("sqlite+aiosqlite:///:memory:"))
            await state.open()
            _FALLBACK[app] = state
    return state


async def run_timer(app: web.Application) -> None:
    """Record settled calls, close timed-out ones, fetch deferred recordings; forever."""
    state = app[TELEPHONY]
    fetcher = app[FETCHER]
    settings: TelephonySettings = app[SERVICE_SETTINGS]  # type: ignore[assignment]
    while True:
        await state.tick()
        for line_id, machine in state.machines.items():
            LIVE_CALLS.labels("telephony", line_id).set(machine.live())
        await fetcher.retry_due(state.view)
        await asyncio.sleep(settings.tick_s)


async def run_pbx_clients(app: web.Application) -> None:
    """One client per `asterisk_ami` or `freeswitch_esl` line, each reconnecting on its own: a
    PBX that is down backs off quietly and degrades its line alone."""
    from .ami import AmiClient  # the adapter modules import this one
    from .esl import EslClient

    state = app[TELEPHONY]
    accounts: TelephonyAccounts = app[ACCOUNTS]  # type: ignore[assignment]
    clients: list[AmiClient | EslClient] = []
    for line in accounts.lines:
        accept = partial(state.accept_all, line.id)
        if isinstance(line, AmiLine):
            clients.append(AmiClient(line, accept, partial(state.open_calls, line.id)))
        elif isinstance(line, EslLine):
            clients.append(EslClient(line, accept, partial(state.open_calls, line.id)))
    state.clients.update({client.line.id: client for client in clients})
    if not clients:
        await asyncio.Event().wait()  # nothing to run: stay up, quietly
    await asyncio.gather(*(client.run_forever() for client in clients))


async def lines_ready(app: web.Application) -> dict[str, object]:
    """`/readyz` details: each line with its state. A PBX that is down degrades its line
    alone, never the service (the webhooks of the other lines still take calls)."""
    state = app.get(TELEPHONY)
    if state is None:
        return {}
    lines: dict[str, object] = {}
    for line_id, machine in state.machines.items():
        adapter = getattr(machine.line, "adapter", "generic")
        client = state.clients.get(line_id)
        entry: dict[str, object] = {"adapter": adapter, "live_calls": machine.live()}
        if adapter in ("asterisk_ami", "freeswitch_esl"):
            entry["state"] = client.state if client is not None else "connecting"
            if client is not None and client.detail:
                entry["detail"] = client.detail
        else:
            entry["state"] = "listening"
        lines[line_id] = entry
    return {"lines": lines}
