"""Kernel-wide settings from `INTAKE_*` environment variables; each service adds its own class."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import SettingInvalid

REPO_ROOT = Path(__file__).resolve().parent.parent
# The example config that ships: found from the repository root when the working directory is
# elsewhere, so that `intake run …` works from a clone. Only this default is looked up there.
DEFAULT_CONFIG = Path("deploy/intake.example.yaml")


class IntakeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_", extra="ignore", frozen=True)

    amqp_url: str = Field(
        default="amqp://guest:guest@127.0.0.1:5672/",
        description="the broker; several comma-separated URLs (a cluster's nodes) are tried "
                    "in turn at every connect and reconnect, from a random one (connections "
                    "spread over the nodes)")
    bus_prefix: str = Field(default="", description="prefix of every exchange and queue name "
                            "(`p` gives `p.intake.inbound`); the tests use their own")
    data_dir: Path = Field(default=Path("var"), description="SQLite file, blob store, "
                           "outboxes, connector state, the generated API token")
    database_url: str | None = Field(
        default=None, description="the ticket core's database; unset: SQLite "
        "`<data dir>/intake.sqlite3`; e.g. `postgresql+asyncpg://user@host/db`, or the plain "
        "`postgresql://…` URI (CloudNativePG's `<cluster>-app` Secret), run with asyncpg")
    blob_url: str | None = Field(
        default=None, pattern=r"^s3://", description="attachments and raw payloads in S3 or "
        "an S3-compatible store, shared by replicas on several nodes: "
        "`s3://bucket/prefix[?endpoint=URL&region=NAME]`, credentials from the `AWS_*` "
        "variables; unset: files under `<data dir>/blobs`")
    state_url: str | None = Field(
        default=None, description="the connectors' state store (sent-ledger, cursors, "
        "journals); unset: SQLite `<data dir>/state.sqlite3`; or a PostgreSQL URL")
    instance_id: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="this replica's "
        "name, unique among the replicas of a service that share `INTAKE_DATA_DIR` (its "
        "outbox is `outbox/<service>-<instance>.sqlite3`); unset: the host name")
    config: Path = Field(default=DEFAULT_CONFIG, description="the deployment's YAML (desks, "
                         "routes, channels); a relative path is taken from the working "
                         "directory and must exist")
    rules: Path | None = Field(default=None, description="a separate YAML with the routing "
                               "sections (they replace those of `INTAKE_CONFIG`); relative "
                               "paths as for `INTAKE_CONFIG`")
    api_token: SecretStr | None = Field(
        default=None, description="bearer token of the agent API; unset: generated once into "
        "`<data dir>/api-token` (mode 0600) and printed by `intake run` when generated")
    ticket_core_url: str | None = Field(
        default=None, description="where services that look something up (the router's "
        "customer lookup) reach the ticket core; unset: `http://127.0.0.1:<INTAKE_TICKET_CORE_"
        "PORT, else 8000>`, the ticket core of `intake run all` on this machine")
    host: str = Field(default="127.0.0.1", description="the address every service binds; set "
                      "`0.0.0.0` in a container, or nothing outside it can connect")
    log_level: str = Field(default="info", description="JSON log lines on stderr: debug, info, "
                           "warning, error")
    publish_timeout_s: float = Field(default=5.0, description="a publish not confirmed within "
                                     "this goes to the outbox instead")
    # Below RabbitMQ's max_message_size (128 MiB by default), so that the broker never refuses
    # a message an outbox already holds; attachments live in the blob store, not in messages.
    max_message_bytes: int = Field(
        default=16 * 1024**2, gt=0, description="the largest message a service publishes; a "
        "bigger one is refused at the edge (`message_too_large`, HTTP 413); keep it below "
        "RabbitMQ's `max_message_size` (128 MiB by default)")
    bus_declare: bool = Field(
        default=True, description="declare the exchanges and queues at every connect (needs "
        "`configure` rights); `false`: declare nothing, check passively that they exist (as "
        "deploy/rabbitmq/definitions.json creates them) and name a missing one in `/readyz`")
    delivery_limit: int = Field(default=5, description="attempts at one message before it is "
                                "dead-lettered (the quorum queues' own limit is the safety net)")
    prefetch: int = Field(default=64, description="unacknowledged messages a consumer holds")
    # Router and ticket core write at once: each hop's window adds to every message's latency.
    connector_write_window_ms: float = Field(
        default=2.0, ge=0, le=50, description="a connector holds each AMQP write this long so "
        "that the publishes of concurrent requests reach the broker together; 0 writes at once")
    # aiohttp has no limit of its own on a slow client (slow-loris).
    http_read_timeout_s: float = Field(
        default=60.0, description="every HTTP service: a client has this long for its request "
        "head, then as long again for the body (408 `request_timeout`)")
    fault: str | None = Field(default=None, description="test only: a fault hook of the chaos "
                              "tests (e.g. `crash_after_commit:N`); refused unless "
                              "`INTAKE_TEST_HARNESS=1`")
    test_harness: bool = Field(default=False, description="test only: the process runs under "
                               "the test harness, which allows `INTAKE_FAULT`")

    @model_validator(mode="after")
    def fault_only_under_the_harness(self) -> IntakeSettings:
        # A stray INTAKE_FAULT must not crash a production ticket core after its commits.
        if self.fault and not self.test_harness:
            raise ValueError("INTAKE_FAULT is set but INTAKE_TEST_HARNESS is not: the fault "
                             "hook only runs under the test harness; unset INTAKE_FAULT")
        return self

    @property
    def effective_ticket_core_url(self) -> str:
        if self.ticket_core_url:
            return self.ticket_core_url
        port = os.environ.get("INTAKE_TICKET_CORE_PORT", "").strip() or "8000"
        return f"http://127.0.0.1:{port}"

    @property
    def amqp_urls(self) -> list[str]:
        return [url.strip() for url in self.amqp_url.split(",") if url.strip()]

    @property
    def instance(self) -> str:
        """`INTAKE_INSTANCE_ID`, or the host name (a pod's name on Kubernetes)."""
        return self.instance_id or socket.gethostname()

    @property
    def config_path(self) -> Path:
        if self.config == DEFAULT_CONFIG and not self.config.exists():
            return REPO_ROOT / DEFAULT_CONFIG
        return existing_path("INTAKE_CONFIG", self.config)

    @property
    def rules_path(self) -> Path | None:
        return existing_path("INTAKE_RULES", self.rules) if self.rules else None

    @property
    def sqlite_url(self) -> str:
        return f"sqlite+aiosqlite:///{(self.data_dir / 'intake.sqlite3').resolve()}"

    @property
    def effective_database_url(self) -> str:
        """`INTAKE_DATABASE_URL` with a plain `postgresql://` (or `postgres://`) URI given the
        asyncpg driver; unset, the SQLite file under the data dir."""
        url = self.database_url
        if not url:
            return self.sqlite_url
        if url.startswith(("postgresql://", "postgres://")):
            return "postgresql+asyncpg://" + url.split("://", 1)[1]
        return url


def existing_path(variable: str, path: Path) -> Path:
    """`path` as given (relative to the working directory); missing is an error naming it."""
    if not path.exists():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise SettingInvalid(f"{variable}: {path} does not exist{where}")
    return path


def settings_problems(exc: ValidationError) -> list[str]:
    """One line per problem of a settings class that failed to load, naming the variable."""
    prefix = _env_prefix_of(exc.title)
    problems = []
    for error in exc.errors():
        location = "_".join(str(part) for part in error.get("loc", ())).upper()
        problems.append(f"{prefix}{location}: {error['msg']}" if location else error["msg"])
    return problems


def _env_prefix_of(class_name: str) -> str:
    """The environment prefix of the settings class named `class_name` (a ValidationError's
    title), found among the loaded subclasses of BaseSettings; `INTAKE_` if none matches."""
    pending: list[type[BaseSettings]] = [BaseSettings]
    while pending:
        klass = pending.pop()
        if klass.__name__ == class_name and klass is not BaseSettings:
            return str(klass.model_config.get("env_prefix", ""))
        pending.extend(klass.__subclasses__())
    return "INTAKE_"
