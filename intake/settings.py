"""Kernel-wide settings from `INTAKE_*` environment variables; each service adds its own class."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class IntakeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_", extra="ignore", frozen=True)

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    bus_prefix: str = ""
    data_dir: Path = Path("var")
    database_url: str | None = None
    config: Path = Path("deploy/intake.example.yaml")
    rules: Path | None = None
    api_token: SecretStr | None = None
    ticket_core_url: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    log_level: str = "info"
    # A publish that is not confirmed within this time goes to the outbox instead.
    publish_timeout_s: float = 5.0
    # The largest message body a service publishes; a bigger one is refused at the edge (413).
    # Below RabbitMQ's max_message_size (128 MiB by default) so that the broker never refuses
    # one that an outbox already holds; attachments live in the blob store, not in the message.
    max_message_bytes: int = Field(default=16 * 1024**2, gt=0)
    # Deliveries of one message before it is dead-lettered (the quorum queue's x-delivery-limit).
    delivery_limit: int = 5
    prefetch: int = 64
    # A connector holds each AMQP write this long, so that the publishes of concurrent requests
    # go out (and wake the broker) together; 0 writes at once. Router and ticket core write at
    # once: each hop's window adds to every message's latency.
    connector_write_window_ms: float = Field(default=2.0, ge=0, le=50)
    # A client has this long to send a whole request head (from connecting, or from the end of
    # its previous request) and then this long again for the body; slower ones are dropped
    # (slow-loris). aiohttp has no such limit of its own.
    http_read_timeout_s: float = 60.0
    # Test-only fault hooks (issue 5), honoured only when set.
    fault: str | None = None

    @property
    def amqp_urls(self) -> list[str]:
        return [url.strip() for url in self.amqp_url.split(",") if url.strip()]

    @property
    def config_path(self) -> Path:
        return resolve_path(self.config)

    @property
    def rules_path(self) -> Path | None:
        return resolve_path(self.rules) if self.rules else None

    @property
    def sqlite_url(self) -> str:
        return f"sqlite+aiosqlite:///{(self.data_dir / 'intake.sqlite3').resolve()}"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or self.sqlite_url


def resolve_path(path: Path) -> Path:
    """Relative paths are taken from the working directory, else from the repository root."""
    if path.is_absolute() or path.exists():
        return path
    candidate = REPO_ROOT / path
    return candidate if candidate.exists() else path
