"""SdkSettings (environment, `INTAKE_SDK_*`) and the apps of `channels.sdk`."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from intake import ConfigPattern

MIB = 1024 * 1024
# An app id is its public app key: in URLs, routing keys and idempotency keys.
APP_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
FIELD_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
JwtAlgorithm = Literal["HS256", "HS384", "HS512"]
FieldType = Literal["text", "textarea", "email", "phone", "select", "number", "date"]


class SdkSettings(BaseSettings):
    """The SDK service's own settings; the apps live in the YAML config."""

    model_config = SettingsConfigDict(env_prefix="INTAKE_SDK_", extra="ignore", frozen=True)

    port: int = 8002
    # Any request body over this is refused with 413 (uploads have their own cap per app).
    max_body_bytes: int = Field(default=MIB, ge=1024)
    # Overrides `channels.sdk.faq.dir`.
    faq_dir: str | None = None
    # Behind a reverse proxy: take the client address from the last X-Forwarded-For hop.
    trust_forwarded_for: bool = False
    # How long a publish may take before the outbox takes the message.
    publish_timeout_s: float = Field(default=5.0, gt=0)
    # Multiplies every app's rate limits: for load tests (the benchmark sets it high).
    rate_limit_scale: float = Field(default=1.0, gt=0)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JwtPolicy(Strict):
    # Only these are ever accepted, whatever a token's header says.
    algorithms: list[JwtAlgorithm] = Field(default_factory=lambda: ["HS256"], min_length=1)
    leeway_s: int = Field(default=30, ge=0, le=600)
    max_lifetime_s: int = Field(default=86_400, ge=60)


class RateLimits(Strict):
    app_per_second: float = Field(default=5000, gt=0)
    user_messages_per_second: float = Field(default=5, gt=0)
    user_burst: int = Field(default=20, ge=1)
    anonymous_sessions_per_minute: float = Field(default=30, gt=0)


class UploadPolicy(Strict):
    max_bytes: int = Field(default=10 * MIB, ge=1)
    allowed_types: list[str] = Field(default_factory=lambda: [
        "image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"])


class FieldOption(Strict):
    value: str = Field(min_length=1, max_length=200)
    label: str = Field(min_length=1, max_length=200)


class TicketField(Strict):
    """One field of the app's ticket form; `min`/`max` bound numbers and dates."""

    name: str = Field(pattern=FIELD_NAME)
    type: FieldType = "text"
    label: str | None = Field(default=None, max_length=200)
    required: bool = False
    options: list[FieldOption] | None = None
    max_length: int | None = Field(default=None, ge=1)
    pattern: ConfigPattern | None = None
    min: float | str | None = None
    max: float | str | None = None

    @field_validator("options", mode="before")
    @classmethod
    def options_from_strings(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"value": item, "label": item} if isinstance(item, str) else item
                    for item in value]
        return value

    @model_validator(mode="after")
    def options_fit_type(self) -> TicketField:
        if (self.type == "select") != (self.options is not None):
            raise ValueError(f"field {self.name!r}: a select, and only a select, has options")
        if self.type not in ("number", "date") and (self.min is not None or self.max is not None):
            raise ValueError(f"field {self.name!r}: min and max apply to number and date fields")
        return self


class Widget(Strict):
    title: str = "在线客服"
    colour: str = Field(default="#1d4ed8", pattern=r"^#[0-9a-fA-F]{6}$")
    greeting: str = "您好，有什么可以帮您？"
    tabs: list[Literal["faq", "tickets", "chat"]] = Field(
        default_factory=lambda: ["faq", "tickets", "chat"])
    locale: str = "zh-CN"


class SdkApp(Strict):
    """One app: its id is its public app key and the `account` of its messages."""

    id: str = Field(pattern=APP_ID)
    identity_secret: str | None = Field(default=None, min_length=16)
    previous_identity_secret: str | None = Field(default=None, min_length=16)
    hmac_mandatory: bool = False
    allow_anonymous: bool = False
    user_namespace: str | None = Field(default=None, pattern=APP_ID)
    jwt: JwtPolicy = Field(default_factory=JwtPolicy)
    allowed_origins: list[str] = Field(default_factory=list)
    rate_limits: RateLimits = Field(default_factory=RateLimits)
    uploads: UploadPolicy = Field(default_factory=UploadPolicy)
    max_message_chars: int = Field(default=5000, ge=1, le=100_000)
    session_lifetime_s: int = Field(default=86_400, ge=60)
    sockets_per_user: int = Field(default=10, ge=1)
    ticket_fields: list[TicketField] = Field(default_factory=list)
    widget: Widget = Field(default_factory=Widget)
    demo: bool = False

    @property
    def namespace(self) -> str:
        return self.user_namespace or self.id

    def secrets(self) -> list[str]:
        return [s for s in (self.identity_secret, self.previous_identity_secret) if s]

    def field(self, name: str) -> TicketField | None:
        return next((f for f in self.ticket_fields if f.name == name), None)

    @field_validator("allowed_origins")
    @classmethod
    def exact_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if "*" in origin or not _ORIGIN.match(origin):
                raise ValueError(f"{origin!r} is not an exact origin such as "
                                 "https://shop.example (no wildcard, path or trailing slash)")
        return value

    @model_validator(mode="after")
    def proof_is_possible(self) -> SdkApp:
        if self.hmac_mandatory and not self.identity_secret:
            raise ValueError(f"app {self.id!r}: hmac_mandatory needs an identity_secret")
        return self


class FaqArticle(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    title: str = Field(min_length=1, max_length=300)
    body: str = ""
    tags: list[str] = Field(default_factory=list)
    locale: str | None = None
    apps: list[str] | None = None


class Faq(Strict):
    dir: str | None = None
    articles: list[FaqArticle] = Field(default_factory=list)


class SdkAccounts(Strict):
    apps: list[SdkApp] = Field(default_factory=list)
    faq: Faq = Field(default_factory=Faq)

    def app(self, app_id: str) -> SdkApp | None:
        return next((a for a in self.apps if a.id == app_id), None)

    @model_validator(mode="after")
    def unique_ids(self) -> SdkAccounts:
        ids = [a.id for a in self.apps]
        if len(set(ids)) != len(ids):
            raise ValueError("app ids must be unique")
        return self
