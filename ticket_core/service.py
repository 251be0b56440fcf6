"""The ticket core service: storage, its consumers, the relay and the agent API."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from intake import (
    BUS,
    SETTINGS,
    ConfigDocument,
    Consumer,
    DeliveryResult,
    IntakeSettings,
    Message,
    Service,
    Task,
    get_logger,
)
from intake.blobs import blob_store_for
from intake.config import load_document, merge_rules
from intake.service import bus_context

from .api import api_routes, auth_middleware, ready_check
from .assigner import Assigner
from .autoreply import load_auto_replies
from .clock_api import clock_from_environment
from .consume import persist_routed, record_results
from .csat_pages import csat_routes
from .db import make_engine, migrate
from .relay import Relay
from .replies import ReplyChannels, default_accounts
from .scheduler import Scheduler
from .settings import TicketCoreSettings
from .store import TicketStore
from .tickets_config import load_tickets
from .timers import Timelines
from .tokens import registry_for

STORE = web.AppKey("store", TicketStore)
log = get_logger(service="ticket-core")


def api_token(settings: IntakeSettings) -> str:
    """`INTAKE_API_TOKEN`, else a token generated once and kept in the data dir (mode 0600)."""
    if settings.api_token is not None:
        return settings.api_token.get_secret_value()
    path: Path = settings.data_dir / "api-token"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


async def follow_timelines(store: TicketStore, settings: IntakeSettings,
                           interval_s: float = 2.0) -> None:
    """Re-read the escalation timelines, desks and calendars when the config or rules file
    changes (the router reloads its rules the same way): new tickets take the new timelines,
    running ones keep the steps they copied. A file that does not load changes nothing."""
    def stamps() -> list[float]:
        paths = [settings.config_path, *([settings.rules_path] if settings.rules_path else [])]
        return [p.stat().st_mtime if p.exists() else 0.0 for p in paths]

    seen = stamps()
    while True:
        await asyncio.sleep(interval_s)
        try:
            now = stamps()
            if now == seen:
                continue
            seen = now
            rules = load_document(settings.rules_path) if settings.rules_path else None
            doc = merge_rules(load_document(settings.config_path), rules)
            store.timelines = Timelines.from_document(doc)
            store.tickets = load_tickets(doc)
            log.info("timelines_reloaded", timelines=sorted(store.timelines.timelines))
        except Exception as exc:  # the router refuses a broken file with its line
            log.warning("timelines_not_reloaded", error=str(exc)[:300])


def build_service(settings: IntakeSettings, doc: ConfigDocument) -> Service:
    own = TicketCoreSettings()
    url = settings.effective_database_url
    engine = make_engine(url)
    # The escalation timelines, desks and calendars of the rules (`doc` holds INTAKE_RULES'
    # sections where set; the router validated them).
    store = TicketStore(engine, sqlite_fast_path=own.sqlite_fast_path,
                        timelines=Timelines.from_document(doc),
                        clock=clock_from_environment())  # INTAKE_TEST_CLOCK (clock_api.py)
    scheduler = Scheduler(store, poll_s=own.timers_poll_s)
    assigner = Assigner(store)  # waiting tickets of round_robin / least_loaded groups
    registry_for(store).cache_s = own.token_cache_s
    blobs = blob_store_for(settings)  # INTAKE_BLOB_URL: S3, else files under the data dir
    reply_channels = ReplyChannels.parse(own.reply_channels, default_accounts(doc))
    auto_replies = load_auto_replies(doc)
    store.tickets = load_tickets(doc)  # the `tickets` section: custom fields, …
    relay_box: list[Relay] = []

    async def storage(app: web.Application) -> AsyncIterator[None]:
        if url.startswith("sqlite"):
            app[SETTINGS].data_dir.mkdir(parents=True, exist_ok=True)
        if own.migrate_on_start:
            await migrate(url)
        yield
        await blobs.close()
        await store.close()
        await engine.dispose()

    async def relay(app: web.Application) -> AsyncIterator[None]:
        # Outbox rows and events committed, also before a crash, are published from here.
        relay = Relay(store, app[BUS], poll_s=own.relay_poll_s, events=own.relay_events)
        relay_box.append(relay)
        relay.start()
        yield
        await relay.stop()

    async def relay_ready(app: web.Application) -> str | None:
        return relay_box[0].problem() if relay_box else None

    async def timers_ready(app: web.Application) -> str | None:
        return scheduler.problem()

    return Service(
        name="ticket-core",
        port=own.port,
        settings=settings,
        routes=[*api_routes(store, blobs=blobs, reply_channels=reply_channels),
                # The rating page of satisfaction requests, outside /api/v1 (no bearer).
                *csat_routes(store, per_minute=own.csat_rate_limit_per_minute,
                             burst=own.csat_rate_limit_burst,
                             trust_forwarded_for=own.trust_forwarded_for)],
        tasks=[*([Task("timers", lambda app: scheduler.run())] if own.timers else []),
               Task("timelines", lambda app: follow_timelines(store, settings),
                    critical=False),
               Task("assigner", lambda app: assigner.run())],
        middlewares=[auth_middleware(api_token(settings), store)],
        # bus_context's exit stops the consumers and waits for in-flight commits.
        consumers=[Consumer("ticket_core", Message,
                            lambda app: persist_routed(store, settings.fault, auto_replies),
                            batch=True,
                            max_batch=own.max_batch, max_wait_s=own.max_batch_wait_s,
                            prefetch=own.prefetch),
                   Consumer("ticket_core.delivery", DeliveryResult,
                            lambda app: record_results(store))],
        contexts=[storage, bus_context, relay],
        ready_checks=[ready_check(store), relay_ready, timers_ready],
        state={STORE: store},
    )
