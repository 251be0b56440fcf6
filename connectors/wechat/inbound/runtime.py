"""What the WeChat edge keeps for the life of a service: state, API client, work queue worker.

The service builds it in `runtime_context` (the state store of `INTAKE_STATE_URL`, a client on
`INTAKE_WECHAT_API_BASE`, the worker running). An app built without that context (the
contract suite's edge) gets one on first use with a state store in a private temporary
directory and no API client: no lookups, and media reported missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from intake import (
    ACCOUNTS,
    BLOBS,
    PUBLISHER,
    SERVICE_SETTINGS,
    SETTINGS,
    StateStore,
    get_logger,
)

from ..client import WechatClient
from ..normalize import Callback, Enrichment
from ..settings import OfficialAccount, WechatAccounts, WechatSettings
from ..state import WechatState
from .work import Worker

log = get_logger(service="wechat", component="runtime")


@dataclass
class WechatRuntime:
    settings: WechatSettings
    accounts: WechatAccounts
    state: WechatState
    client: WechatClient | None
    worker: Worker
    _in_flight: dict[str, asyncio.Future[bool]] = field(default_factory=dict)
    _cleanup: list[Callable[[], Any]] = field(default_factory=list)
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    async def open(cls, app: web.Application, store: StateStore, *,
                   with_client: bool) -> WechatRuntime:
        settings: WechatSettings = app[SERVICE_SETTINGS]  # type: ignore[assignment]
        accounts: WechatAccounts = app[ACCOUNTS]  # type: ignore[assignment]
        state = WechatState(store)
        await state.open()
        client = WechatClient(settings, state) if with_client else None
        worker = Worker(settings, accounts, state, client, app[PUBLISHER], app[BLOBS])
        return cls(settings, accounts, state, client, worker)

    async def close(self) -> None:
        await self.settle_background()
        if self.client is not None:
            await self.client.close()
        await self.state.close()
        for cleanup in self._cleanup:
            cleanup()

    # -- the edge's questions ------------------------------------------------------------------

    async def accept_once(self, callback: Callback,
                          make_durable: Callable[[], Awaitable[None]]) -> bool:
        """Run `make_durable` for a callback not accepted before; False for a duplicate.

        Concurrent copies of one callback in this process wait for the first (so one media
        download); the accepted key is written once the callback is durable.
        """
        key = callback.idempotency_key
        while (pending := self._in_flight.get(key)) is not None:
            with contextlib.suppress(Exception):
                if await asyncio.shield(pending):
                    return False
        # The store is asked only where a repeat costs more than a duplicate the ticket core
        # drops: a media download. Retries to this process are known without asking.
        if await self.state.was_accepted(key, self.settings.accepted_keys_ttl_s,
                                         ask_store=callback.needs_media):
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            await make_durable()
            # The callback is durable: WeChat is answered now, and the accepted key is written
            # after the answer (this process knows it at once). A key lost in a crash only lets
            # a retry through as a duplicate, which the ticket core's unique key absorbs.
            self.state.remember_accepted(key)
            if callback.needs_media:  # the only keys the store is asked about (above)
                self.in_background(self.state.mark_accepted(key), "accepted_key_unwritten")
            future.set_result(True)
            return True
        except BaseException:
            future.set_result(False)
            raise
        finally:
            self._in_flight.pop(key, None)

    async def needs_work(self, callback: Callback) -> bool:
        """Media to fetch, or an openid whose unionid was never looked up."""
        if callback.is_event:
            return False
        if callback.needs_media:
            return True
        return await self._unknown_user(callback)

    async def _unknown_user(self, callback: Callback) -> bool:
        account = self.accounts.find(callback.account)
        if self.client is None or not isinstance(account, OfficialAccount):
            return False
        return await self.state.user(account.id, callback.sender) is None

    async def cached_enrichment(self, callback: Callback) -> Enrichment:
        """The unionid already known for this sender (no call to WeChat)."""
        if callback.account_kind != "official_account":
            return Enrichment()
        cached = await self.state.user(callback.account, callback.sender)
        return Enrichment(unionid=(cached or {}).get("unionid"))

    def note_interaction(self, callback: Callback) -> None:
        """Recorded after the answer: the replies held for this customer may go out now."""
        customer = (f"{callback.corp_id}:{callback.sender}" if callback.corp_id
                    else callback.sender)
        if self.state.interaction_noted_lately(callback.account, customer):
            return  # the sender allows for this (INTERACTION_GRAIN_S)
        self.in_background(self.state.note_interaction(callback.account, customer),
                           "interaction_unrecorded")

    def in_background(self, work: Coroutine[Any, Any, None], failure: str) -> None:
        """Bookkeeping that WeChat's answer need not wait for; a failure is logged."""
        task = asyncio.ensure_future(work)
        self._background.add(task)

        def settled(done: asyncio.Future[None]) -> None:
            self._background.discard(task)
            if not done.cancelled() and done.exception() is not None:
                log.warning(failure, error=repr(done.exception())[:300])

        task.add_done_callback(settled)

    async def settle_background(self) -> None:
        """Wait for the bookkeeping in flight (at shutdown, and in tests)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def wake_worker(self) -> None:
        self.worker.wake.set()


RUNTIME = web.AppKey("wechat_runtime", WechatRuntime)


async def runtime_context(app: web.Application) -> AsyncIterator[None]:
    """The service's runtime: the shared state store, the API client, the worker's queue."""
    runtime = await WechatRuntime.open(app, StateStore.from_settings(app[SETTINGS]),
                                       with_client=True)
    app[RUNTIME] = runtime
    base = runtime.settings.public_url or f"http://127.0.0.1:{runtime.settings.port}"
    for account in runtime.accounts.accounts:  # what ops paste into WeChat's admin console
        url = f"{base.rstrip('/')}/wechat/{account.id}"
        mode = "always encrypted" if account.kind == "wecom_app" else f"{account.mode} mode"
        print(f"  wechat callback {url} ({account.kind}, {mode})", flush=True)
        log.info("callback_url", account=account.id, url=url, mode=account.mode)
    try:
        yield
    finally:
        await runtime.close()


async def run_worker(app: web.Application) -> None:
    """The work queue's worker (a supervised task of the service)."""
    await app[RUNTIME].worker.run_forever()


@dataclass
class LazyRuntime:
    """The runtime of an app built without `runtime_context` (the contract suite's edge)."""

    runtime: WechatRuntime | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def of(self, app: web.Application) -> WechatRuntime:
        found = app.get(RUNTIME)
        if found is not None:
            return found
        async with self.lock:
            if self.runtime is None:
                folder = tempfile.mkdtemp(prefix="intake-wechat-")
                url = f"sqlite+aiosqlite:///{folder}/state.sqlite3"
                self.runtime = await WechatRuntime.open(app, StateStore(url), with_client=False)
                self.runtime._cleanup.append(lambda: shutil.rmtree(folder, ignore_errors=True))
            return self.runtime
