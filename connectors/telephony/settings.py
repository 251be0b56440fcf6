"""TelephonySettings (environment, `INTAKE_TELEPHONY_*`) and the lines of `channels.telephony`."""

from __future__ import annotations

import base64
import binascii
import zoneinfo
from typing import Annotated, Literal

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from intake import ConfigPattern

LINE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$"
DEFAULT_AMI_AGENT = r"^(?:PJSIP|SIP|IAX2)/(?P<agent>[^-/@]+)-"
DEFAULT_ESL_AGENT = r"^sofia/[^/]+/(?P<agent>[^@]+)@"


class TelephonySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_TELEPHONY_", extra="ignore", frozen=True)

    port: int = 8004
    # A webhook body is one event or a small batch: 256 KiB is far more than any PBX sends.
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # Standard Webhooks: a timestamp further than this from the gateway clock is refused.
    timestamp_tolerance_s: float = Field(default=300.0, gt=0)
    # A repeated webhook-id is a duplicate for this long.
    webhook_id_ttl_s: float = Field(default=48 * 3600.0, gt=0)
    # A recorded call's journal is kept this long for late events, then pruned.
    journal_keep_s: float = Field(default=24 * 3600.0, gt=0)
    # How often the timer looks for calls to record or close.
    tick_s: float = Field(default=0.2, gt=0)


def _known_region(value: str) -> str:
    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{value!r} is not a region phonenumbers knows (e.g. CN, US, GB)")
    return value


def _known_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. Asia/Shanghai)") from exc
    return value


def _webhook_secret(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if not text.startswith("whsec_"):
        raise ValueError("a Standard Webhooks secret is 'whsec_' + base64 of the key")
    try:
        key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the part after 'whsec_' is not base64") from exc
    if len(key) < 16:
        raise ValueError("the key is shorter than 16 bytes")
    return value


Region = Annotated[str, AfterValidator(_known_region)]
WebhookSecret = Annotated[SecretStr, AfterValidator(_webhook_secret)]


class Recordings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Only URLs under these prefixes are fetched: fetching whatever a webhook names is SSRF.
    allow: list[str] = Field(default_factory=list)
    max_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    retry_for_s: float = Field(default=24 * 3600.0, ge=0)

    def allows(self, url: str) -> bool:
        return any(url.startswith(prefix) for prefix in self.allow)


class Voicemail(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    greeting: str | None = None
    play: str | None = None
    language: str = "en-US"
    max_length_s: int = Field(default=120, ge=1, le=3600)


class LineBase(BaseModel):
    """What every line has, whatever its adapter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The `account` of the messages it produces: it appears in keys and routing keys.
    id: str = Field(pattern=LINE_ID)
    number: str | None = None
    region: Region = "CN"
    when_unpicked: Literal["new_ticket", "latest_open_ticket"] = "new_ticket"
    wrap_up_s: float = Field(default=0.0, ge=0)
    settle_s: float = Field(default=2.0, ge=0)
    ring_timeout_s: float = Field(default=600.0, gt=0)
    max_call_s: float = Field(default=14400.0, gt=0)
    language: Literal["zh", "en"] | None = None
    recordings: Recordings = Field(default_factory=Recordings)

    @property
    def summary_language(self) -> str:
        return self.language or ("zh" if self.region in ("CN", "TW", "HK", "MO", "SG") else "en")


class GenericLine(LineBase):
    adapter: Literal["generic"]
    secret: WebhookSecret


class TwilioLine(LineBase):
    adapter: Literal["twilio"]
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: SecretStr
    # A Webhook Rule's SharedKey secret: requests with X-Twilio-Webhooks-Signature-Settings
    # are signed with it (HMAC_SHA256); `require_shared_key` then refuses the auth token's.
    shared_key_secret: SecretStr | None = None
    require_shared_key: bool = False
    public_url: str = Field(pattern=r"^https?://")
    dial: list[str] = Field(default_factory=list)
    twiml: bool = True
    record_calls: bool = False
    voicemail: Voicemail | None = None

    @model_validator(mode="after")
    def a_required_shared_key_is_set(self) -> TwilioLine:
        if self.require_shared_key and self.shared_key_secret is None:
            raise ValueError(f"line {self.id!r}: require_shared_key needs shared_key_secret")
        return self


class AmiLine(LineBase):
    adapter: Literal["asterisk_ami"]
    host: str
    port: int = Field(default=5038, ge=1, le=65535)
    username: str
    secret: SecretStr
    # The PBX's: cdr_manager writes a `Cdr`'s times in its local time, without an offset.
    timezone: Annotated[str, AfterValidator(_known_timezone)] = "UTC"
    inbound_contexts: list[str] = Field(default_factory=lambda: ["from-pstn"])
    agent_channel: ConfigPattern = DEFAULT_AMI_AGENT
    recording_url: str | None = None


class EslLine(LineBase):
    adapter: Literal["freeswitch_esl"]
    host: str
    port: int = Field(default=8021, ge=1, le=65535)
    password: SecretStr
    inbound_contexts: list[str] = Field(default_factory=lambda: ["public"])
    agent_channel: ConfigPattern = DEFAULT_ESL_AGENT
    recording_url: str | None = None


TelephonyLine = Annotated[GenericLine | TwilioLine | AmiLine | EslLine,
                          Field(discriminator="adapter")]


class TelephonyAccounts(BaseModel):
    """`channels.telephony`: the phone lines."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lines: list[TelephonyLine] = Field(default_factory=list)

    @field_validator("lines")
    @classmethod
    def ids_are_unique(cls, lines: list[LineBase]) -> list[LineBase]:
        seen: set[str] = set()
        for line in lines:
            if line.id in seen:
                raise ValueError(f"two lines have the id {line.id!r}")
            seen.add(line.id)
        return lines

    @model_validator(mode="after")
    def agent_patterns_name_the_agent(self) -> TelephonyAccounts:
        for line in self.lines:
            pattern = getattr(line, "agent_channel", None)
            if pattern is not None and "(?P<agent>" not in pattern:
                raise ValueError(f"line {line.id!r}: agent_channel needs a group (?P<agent>…)")
        return self

    def find(self, line_id: str) -> LineBase | None:
        return next((line for line in self.lines if line.id == line_id), None)
