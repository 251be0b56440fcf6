"""The ticket core's own settings (`INTAKE_TICKET_CORE_*`)."""

from __future__ import annotations

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
    # never waits). Bigger batches share one commit: waiting took the closed-loop benchmark
    # from ~1,000 to ~1,200 messages/s on 2 cores; 3 ms keeps most of that gain at less latency.
    max_batch_wait_s: float = 0.003
    prefetch: int = 256
