"""WechatSettings (environment, `INTAKE_WECHAT_*`) and the accounts of `channels.wechat`."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024
ACCOUNT_ID = r"^[A-Za-z0-9_-]{1,64}$"
# WeChat's admin console: a token is 3 to 32 letters and digits.
TOKEN = r"^[A-Za-z0-9]{3,32}$"


class WechatSettings(BaseSettings):
    """The WeChat service's own settings; the accounts themselves live in the YAML config."""

    model_config = SettingsConfigDict(env_prefix="INTAKE_WECHAT_", extra="ignore", frozen=True)

    # The callback endpoint's HTTP port (`/wechat/<account id>`).
    port: int = 8003
    # Where the callback URLs printed at start point (the address WeChat's servers reach);
    # empty: `http://127.0.0.1:<port>`.
    public_url: str = ""
    # WeChat's API for official accounts; plain HTTP allowed, so tests can point at a fake.
    api_base: str = "https://api.weixin.qq.com"
    # WeCom's API for WeCom apps; plain HTTP allowed, as above.
    wecom_api_base: str = "https://qyapi.weixin.qq.com"
    # A callback body over this is refused (413) while it is read.
    max_body_bytes: int = Field(default=MIB, ge=1024)
    # A media file over this is not kept: the message is flagged `attachment_missing`.
    max_media_bytes: int = Field(default=20 * MIB, ge=1024)
    # The broker's share of WeChat's 5-second deadline; the outbox takes what is left.
    publish_timeout_s: float = Field(default=2.0, gt=0)
    # A callback not durable by then is answered 503, so that WeChat retries it.
    callback_deadline_s: float = Field(default=4.0, gt=0)
    # Each call to WeChat's API (tokens, media, user info, replies) is cut off after this.
    api_timeout_s: float = Field(default=10.0, gt=0)
    # Replies held for a customer whose window closed fail after this many days.
    reply_wait_days: float = Field(default=7.0, gt=0)
    # How long an accepted idempotency key answers a retry at once (WeChat retries for 15 s).
    accepted_keys_ttl_s: int = Field(default=3600, ge=60)
    # A user-info answer (the unionid) is reused this long per account and openid.
    user_info_ttl_s: int = Field(default=86400, ge=0)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_aes_key(value: SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    raw = value.get_secret_value()
    if len(raw) != 43:
        raise ValueError("an EncodingAESKey is 43 characters")
    try:
        key = base64.b64decode(raw + "=", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("an EncodingAESKey is base64 (letters, digits, + and /)") from exc
    if len(key) != 32:
        raise ValueError("an EncodingAESKey decodes to 32 bytes")
    return value


class PassiveReply(Strict):
    """A text answered in the callback response, at most once per customer per interval."""

    text: str = Field(min_length=1, max_length=2000)
    min_interval_s: int = Field(default=3600, ge=0)


class OfficialAccount(Strict):
    """A 公众号 (official account): `mode` is WeChat's 明文 / 兼容 / 安全 mode."""

    kind: Literal["official_account"]
    id: str = Field(pattern=ACCOUNT_ID)
    app_id: str = Field(min_length=1, max_length=64)
    app_secret: SecretStr
    token: SecretStr
    mode: Literal["plain", "compatible", "safe"] = "safe"
    encoding_aes_key: SecretStr | None = None
    original_id: str | None = Field(default=None, max_length=64)
    passive_reply: PassiveReply | None = None
    max_clock_skew_s: int = Field(default=300, ge=1, le=86400)

    _aes = field_validator("encoding_aes_key")(_check_aes_key)

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        return _check_token(value)

    @model_validator(mode="after")
    def _key_unless_plain(self) -> OfficialAccount:
        if self.mode != "plain" and self.encoding_aes_key is None:
            raise ValueError(f"encoding_aes_key is required in {self.mode} mode")
        return self

    @property
    def receiver_id(self) -> str:
        """The id inside every ciphertext (the AppID)."""
        return self.app_id

    @property
    def encrypted(self) -> bool:
        return self.mode != "plain"


class WecomApp(Strict):
    """A WeCom (企业微信) self-built app: callbacks are always encrypted."""

    kind: Literal["wecom_app"]
    id: str = Field(pattern=ACCOUNT_ID)
    corp_id: str = Field(min_length=1, max_length=64)
    agent_id: int
    secret: SecretStr
    token: SecretStr
    encoding_aes_key: SecretStr
    max_clock_skew_s: int = Field(default=300, ge=1, le=86400)

    _aes = field_validator("encoding_aes_key")(_check_aes_key)

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        return _check_token(value)

    @property
    def receiver_id(self) -> str:
        return self.corp_id

    @property
    def encrypted(self) -> bool:
        return True

    @property
    def mode(self) -> str:
        return "safe"

    @property
    def original_id(self) -> str:
        return self.corp_id

    @property
    def passive_reply(self) -> None:
        return None


def _check_token(value: SecretStr) -> SecretStr:
    if not re.fullmatch(TOKEN, value.get_secret_value()):
        raise ValueError("a token is 3 to 32 letters and digits")
    return value


Account = Annotated[OfficialAccount | WecomApp, Field(discriminator="kind")]


class WechatAccounts(Strict):
    accounts: list[Account] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> WechatAccounts:
        seen: set[str] = set()
        for account in self.accounts:
            if account.id in seen:
                raise ValueError(f"account id {account.id!r} appears twice")
            seen.add(account.id)
        return self

    def find(self, account_id: str) -> OfficialAccount | WecomApp | None:
        return next((a for a in self.accounts if a.id == account_id), None)
