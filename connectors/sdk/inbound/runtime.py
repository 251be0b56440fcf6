"""What the SDK's handlers share in one process: the state, the limiters, the live sockets."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from intake import ACCOUNTS, BUS, SERVICE_SETTINGS, SETTINGS, RateLimiter, StateStore

from ..errors import AppUnknown, RateLimited
from ..outbound import LiveFanout, Receipts
from ..settings import SdkAccounts, SdkApp, SdkSettings
from ..state import APPENDED, SdkState
from .faq import Faq

LIMITER_TABLE = 100_000


class Runtime:
    """Opened once per service (its cleanup context), or lazily by the first request."""

    def __init__(self, settings: SdkSettings, accounts: SdkAccounts, store: StateStore) -> None:
        self.settings = settings
        self.accounts = accounts
        self.store = store
        self.state = SdkState(store)
        folder = settings.faq_dir or accounts.faq.dir
        self.faq = Faq(Path(folder) if folder else None, list(accounts.faq.articles))
        self._opened = asyncio.Lock()
        self._open = False
        self.receipts = Receipts(self.state, None)  # the service's bus, once it has one
        self.app_limiters: dict[str, RateLimiter] = {}
        self.user_limiters: dict[str, RateLimiter] = {}
        self.anonymous_limiters: dict[str, RateLimiter] = {}
        scale = settings.rate_limit_scale
        for app in accounts.apps:
            limits = app.rate_limits
            self.app_limiters[app.id] = RateLimiter(
                int(limits.app_per_second * 60 * scale),
                max(1, int(limits.app_per_second * scale)), 1)
            self.user_limiters[app.id] = RateLimiter(
                int(limits.user_messages_per_second * 60 * scale),
                int(limits.user_burst * scale), LIMITER_TABLE)
            self.anonymous_limiters[app.id] = RateLimiter(
                int(limits.anonymous_sessions_per_minute * scale),
                max(1, int(limits.anonymous_sessions_per_minute * scale)), LIMITER_TABLE)

    async def open(self) -> None:
        async with self._opened:
            if not self._open:
                await self.store.open()
                self._open = True

    async def close(self) -> None:
        await self.store.close()
        self._open = False

    def app(self, app_id: str) -> SdkApp:
        app = self.accounts.app(app_id)
        if app is None:
            raise AppUnknown(f"There is no app {app_id!r}.")
        return app

    @staticmethod
    def limit(limiter: RateLimiter, key: str, what: str) -> None:
        wait = limiter.take(key)
        if wait > 0:
            raise RateLimited(f"Too many {what}; try again in {wait:.1f} s.", wait)


RUNTIME = web.AppKey("sdk_runtime", Runtime)
_LAZY: dict[int, Runtime] = {}


def build_runtime(app: web.Application) -> Runtime:
    settings: SdkSettings = app[SERVICE_SETTINGS]  # type: ignore[assignment]
    accounts: SdkAccounts = app[ACCOUNTS]  # type: ignore[assignment]
    return Runtime(settings, accounts, StateStore.from_settings(app[SETTINGS]))


def runtime_for(app: web.Application) -> Runtime:
    """The service's runtime; an app built without the SDK's context (the contract suite's)
    gets one of its own, opened on first use."""
    runtime = app.get(RUNTIME)
    if runtime is None:
        runtime = _LAZY.get(id(app))
        if runtime is None:
            runtime = _LAZY[id(app)] = build_runtime(app)
    return runtime


async def runtime_of(request: web.Request) -> Runtime:
    runtime = runtime_for(request.app)
    await runtime.open()
    return runtime


def raise_open_file_limit() -> tuple[int, int]:
    """Every socket is a file: the soft limit goes up to the hard one (often 1024 → 1M)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


async def runtime_context(app: web.Application) -> AsyncIterator[None]:
    """The SDK service's cleanup context: the runtime opened at start, closed at stop."""
    raise_open_file_limit()
    runtime = build_runtime(app)
    await runtime.open()
    runtime.receipts.bus = app.get(BUS)
    fanout = None
    if BUS in app:
        from . import socket

        fanout = LiveFanout(app[BUS], socket.HUB.wake)
        await fanout.start()
        APPENDED.append(fanout.appended)
        socket.HUB.fanout = True
    app[RUNTIME] = runtime
    # The FAQ index (and jieba's dictionary, about a second) built now, not on the first search.
    warm = asyncio.create_task(runtime.faq.fresh(), name="sdk-faq-warm-up")
    try:
        yield
    finally:
        warm.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await warm
        if fanout is not None:
            APPENDED.remove(fanout.appended)
        await runtime.close()

