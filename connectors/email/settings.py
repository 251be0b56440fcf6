"""EmailSettings (environment, `INTAKE_EMAIL_*`) and the mailboxes of `channels.email`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from intake import ConfigPattern

MIB = 1024 * 1024
DEFAULT_TAG_PATTERNS = (
    r"\[#(?P<number>\d{1,12})\]",
    r"\[[A-Za-z][\w-]{0,20} ?#(?P<number>\d{1,12})\]",
    r"工单号\s*[#＃:：]\s*(?P<number>\d{1,12})",
    r"(?i)\bTicket ?#(?P<number>\d{1,12})",
)
DEFAULT_AUTO_REPLY_SUBJECTS = (
    "Automatic reply", "Auto", "Autoreply", "Auto-reply", "Auto Reply", "Out of Office",
    "Out of the office", "Abwesenheitsnotiz", "Automatische Antwort", "Réponse automatique",
    "Respuesta automática", "自动回复", "自动答复", "自動回覆", "自動回信", "自動応答",
    "休假自动回复",
)


class EmailSettings(BaseSettings):
    """The email service's own settings; mailboxes and mail policy live in the YAML config."""

    model_config = SettingsConfigDict(env_prefix="INTAKE_EMAIL_", extra="ignore", frozen=True)

    port: int = 8005
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    # The SMTP `SIZE` advertised and enforced (RFC 1870); aiosmtpd's own default is 32 MiB.
    max_message_bytes: int = Field(default=50 * MIB, ge=1024)
    max_recipients: int = Field(default=100, ge=1)
    # MIME parsing runs in worker processes, each mail with a time limit (a MIME bomb).
    parse_workers: int = Field(default=2, ge=0)
    parse_timeout_s: float = Field(default=30.0, gt=0)
    # A session silent this long (between commands, or between data blocks) gets `421 4.4.2`.
    idle_timeout_s: float = Field(default=300.0, gt=0)
    # The whole DATA transfer's time limit: a client trickling bytes is cut with `421 4.4.2`
    # (600 s lets a 50 MiB mail through at 90 kB/s).
    data_timeout_s: float = Field(default=600.0, gt=0)
    max_sessions: int = Field(default=200, ge=1)
    max_sessions_per_client: int = Field(default=20, ge=1)
    tls_cert: str | None = None
    tls_key: str | None = None
    require_tls: bool = False
    # Comma-separated networks allowed to deliver (`10.0.0.0/8,127.0.0.1/32`); empty: anyone.
    trusted_relays: str = ""
    # Expect a PROXY protocol header (v1 or v2) from a load balancer on every connection; the
    # client it names is the one limits, trusted relays and the envelope see.
    proxy_protocol: bool = False

    @model_validator(mode="after")
    def tls_pair(self) -> EmailSettings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("INTAKE_EMAIL_TLS_CERT and INTAKE_EMAIL_TLS_KEY go together")
        if self.require_tls and not self.tls_cert:
            raise ValueError("INTAKE_EMAIL_REQUIRE_TLS needs INTAKE_EMAIL_TLS_CERT and _TLS_KEY")
        return self


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OAuth2(Strict):
    token_url: str
    client_id: str
    client_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    grant: Literal["refresh_token", "client_credentials"] = "refresh_token"
    scope: str = ""


class OutboundRelay(Strict):
    """Where an account's mail goes out: an SMTP relay (submission port, or a local MTA)."""

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "starttls"
    auth: Literal["password", "xoauth2"] = "password"
    username: str | None = None  # xoauth2: defaults to the account address
    password: SecretStr | None = None
    # xoauth2: e.g. scope `https://outlook.office.com/SMTP.Send offline_access`
    oauth2: OAuth2 | None = None
    timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def consistent(self) -> OutboundRelay:
        if self.auth == "xoauth2" and self.oauth2 is None:
            raise ValueError("auth: xoauth2 needs an oauth2 section")
        return self


class ImapMailbox(Strict):
    """A mailbox the gateway pulls mail from (imapclient, a thread of its own)."""

    host: str
    port: int = Field(default=993, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "tls"
    allow_insecure: bool = False
    auth: Literal["password", "xoauth2"] = "password"
    username: str
    password: SecretStr | None = None
    oauth2: OAuth2 | None = None
    folder: str = "INBOX"
    after_intake: Literal["seen", "move", "none"] = "seen"
    move_to: str | None = None
    idle: bool = True
    poll_seconds: float = Field(default=60.0, gt=0)
    # How far back a first connection imports: `7d`, `all`, or a date `2026-01-31`.
    start_from: str = Field(default="7d", pattern=r"^(all|\d{1,4}d|\d{4}-\d{2}-\d{2})$")
    batch_size: int = Field(default=50, ge=1, le=1000)

    @model_validator(mode="after")
    def consistent(self) -> ImapMailbox:
        if self.auth == "xoauth2" and self.oauth2 is None:
            raise ValueError("auth: xoauth2 needs an oauth2 section")
        if self.after_intake == "move" and not self.move_to:
            raise ValueError("after_intake: move needs move_to (a folder)")
        if self.security == "none" and not self.allow_insecure and self.host not in (
                "127.0.0.1", "::1", "localhost"):
            raise ValueError("plain IMAP only to loopback, unless allow_insecure: true")
        return self


class EmailAccount(Strict):
    """One mailbox: its address (and aliases), how mail reaches it, and its outbound relay."""

    # The `account` of its messages: it appears in keys and routing keys.
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")
    address: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    aliases: list[str] = Field(default_factory=list)
    # Addresses that forward customers' mail to us: their Reply-To names the customer.
    forwarders: list[str] = Field(default_factory=list)
    smtp_in: bool = True
    outbound: OutboundRelay | None = None
    imap: ImapMailbox | None = None
    # Adds `Reply-To: <local>+t<N>@<domain>` to outgoing mail, so a reply threads by address.
    reply_to_plus: bool = False

    @field_validator("address")
    @classmethod
    def lower(cls, value: str) -> str:
        return value.lower()

    @field_validator("aliases", "forwarders")
    @classmethod
    def lower_all(cls, values: list[str]) -> list[str]:
        return [value.lower() for value in values]

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1]

    @property
    def addresses(self) -> list[str]:
        return [self.address, *self.aliases]


class AutoMailLimits(Strict):
    per_recipient_per_hour: int = Field(default=5, ge=0)
    per_recipient_per_day: int = Field(default=20, ge=0)


class TicketTag(Strict):
    """How a ticket number is written into subjects, and the patterns that find it again.

    Each pattern is RE2 with a group named `number`.
    """

    format: str = "[#{number}]"
    patterns: list[ConfigPattern] = Field(default_factory=lambda: list(DEFAULT_TAG_PATTERNS))

    @field_validator("patterns")
    @classmethod
    def named_group(cls, values: list[str]) -> list[str]:
        for value in values:
            if "(?P<number>" not in value:
                raise ValueError(f"pattern {value!r} has no group (?P<number>…)")
        return values


class EmailAccounts(Strict):
    """The `channels.email` section."""

    auto_mail_limits: AutoMailLimits = Field(default_factory=AutoMailLimits)
    no_auto_reply_to: ConfigPattern = (
        r"(?i)^(noreply|no-reply|do-not-reply|donotreply|mailer-daemon|postmaster|bounces?)@")
    ticket_tag: TicketTag = Field(default_factory=TicketTag)
    auto_reply_subjects: list[str] = Field(
        default_factory=lambda: list(DEFAULT_AUTO_REPLY_SUBJECTS))
    accounts: list[EmailAccount] = Field(default_factory=list)

    @model_validator(mode="after")
    def unique(self) -> EmailAccounts:
        seen: set[str] = set()
        for account in self.accounts:
            for address in account.addresses:
                if address in seen:
                    raise ValueError(f"the address {address} belongs to two accounts")
                seen.add(address)
        return self

    def find(self, account_id: str) -> EmailAccount | None:
        return next((a for a in self.accounts if a.id == account_id), None)

    @property
    def domains(self) -> set[str]:
        return {address.rsplit("@", 1)[1] for a in self.accounts for address in a.addresses}

    @property
    def our_addresses(self) -> set[str]:
        return {address for a in self.accounts for address in a.addresses}
