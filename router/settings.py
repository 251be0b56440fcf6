"""The router's own settings (`INTAKE_ROUTER_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_ROUTER_", extra="ignore", frozen=True)

    port: int = 8006
    # How often the rules file is checked for changes.
    reload_interval_s: float = Field(default=1.0, gt=0)
    prefetch: int = 256
    # Messages decided and published together at most (batches form only under load).
    max_batch: int = 100
    # Under load, how long a batch waits for company (a lone message never waits). 0: the
    # pipeline already batches whatever arrives while earlier batches await confirms.
    max_batch_wait_s: float = Field(default=0.0, ge=0, le=1)
    # Batches under way at once: the next is published while earlier ones await confirms.
    pipeline: int = Field(default=4, ge=1, le=64)
