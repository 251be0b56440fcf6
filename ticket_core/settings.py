"""The ticket core's own settings (`INTAKE_TICKET_CORE_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TicketCoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_TICKET_CORE_", extra="ignore",
                                      frozen=True)

    port: int = 8000
    # Apply pending migrations at start, so `intake run ticket-core` works on a fresh SQLite.
    migrate_on_start: bool = True
    # Messages persisted in one transaction at most; batches grow only under load.
    max_batch: int = 100
    # Under load, how long a batch waits for company before it is written (a lone message
    # never waits). Bigger batches share one commit and one ack: at 0.2 × the broker's hop,
    # 5 ms instead of 3 took the ticket core from 0.42 to 0.38 ms CPU per message and the p99
    # request → persisted down with it (less CPU, less queueing behind it on 2 cores).
    max_batch_wait_s: float = 0.005
    prefetch: int = 256
    # Channels whose connector runs a sender, comma-separated: replies go out only through
    # these (the ticket core imports no connector to find out). A reply on a listed channel
    # whose connector is not running is recorded `failed`, `no_connector`. The web form never
    # replies, whatever this says.
    reply_channels: str = "email,wechat,sdk"
    # How often the relay looks for unpublished outbox and event rows when no commit of this
    # process woke it (another replica's commits, rows left by a crash).
    relay_poll_s: float = 1.0
    # Publish the event log to `intake.events` (the SSE stream serves it either way). Each event
    # is an AMQP publish, about 0.16 ms of CPU (pamqp's frame marshalling, mostly): two per new
    # ticket. Off, for a deployment where nothing consumes intake.events, or to measure it.
    relay_events: bool = True
    # On SQLite, write through the raw sqlite3 statements of ticket_core/writes.py (true) or
    # through the SQLAlchemy Core statements PostgreSQL uses (false): the same rows either way
    # (test_writes.py compares them); kept switchable to measure what the raw path saves.
    sqlite_fast_path: bool = True
    # The timer scheduler (scheduler.py) looks for due timers at the next due time, and at
    # least this often (a timer another process planned may fall due sooner).
    timers_poll_s: float = 1.0
    # Run the timer scheduler in this process (each of several processes may: every timer
    # fires once whichever claims it).
    timers: bool = True
    # How long an agent token's lookup is reused (tokens.py). A revocation empties this
    # process's cache at once; another replica may honour a revoked token this long. 0: none.
    token_cache_s: float = 2.0
    # The rating page (`/csat/{token}`, csat_pages.py): requests per minute and burst per
    # client address, GET and POST together (a token cannot be guessed, a flood can be cut).
    csat_rate_limit_per_minute: int = Field(default=20, ge=1)
    csat_rate_limit_burst: int = Field(default=10, ge=1)
    # Behind our own reverse proxy: take the client address from the last X-Forwarded-For hop
    # (else every customer would share the proxy's address and its budget).
    trust_forwarded_for: bool = False
