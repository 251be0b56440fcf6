"""LoopbackSettings (`INTAKE_API_*`, as the channel it stands in for) and its accounts."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LoopbackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_API_", extra="ignore", frozen=True)

    port: int = 8007
    # Where the sender "delivers": one JSON line per message sent.
    sink_path: Path = Path("var/loopback-sink.jsonl")


class LoopbackAccount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")


class LoopbackAccounts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accounts: list[LoopbackAccount] = Field(default_factory=list)

    def account(self, account_id: str) -> LoopbackAccount | None:
        return next((a for a in self.accounts if a.id == account_id), None)
