"""`EmailSender`: agent replies and automatic mail out through each account's SMTP relay.

The kernel's runner (intake/sending.py) gives each outbound message once (its sent-ledger),
retries a `RetryLater` from its durable retry queue (here a 4xx or a connection failure, for
about 24 hours), dead-letters a relay's permanent refusal (a 5xx: `Failed(dead_letter=True)`)
so `intake dlq replay` can send it after a fix, and publishes each result. This module builds
the mail and runs the loop breaker: automatic mail (any kind but `reply`) to an address
matching `no_auto_reply_to`, to one of our own addresses, to one that bounced permanently in 60
days, or over the per-recipient caps, is `Suppressed` and reaches no relay. Agent replies are
never held back.
"""

from __future__ import annotations

import email.utils
import hashlib
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from typing import Any

import aiosmtplib
import re2
from aiosmtplib.email import flatten_message
from prometheus_client import Counter

from intake import (
    Attachment,
    Failed,
    IntakeSettings,
    OutboundMessage,
    RetryLater,
    SenderKit,
    SendOutcome,
    Sent,
    Suppressed,
    blob_store_for,
    get_logger,
)

from .client import TokenRefused, TokenSource, TokenUnavailable, token_namespace
from .normalize.classify import MAX_REFERENCES, ticket_number_from_subject, trim_references
from .normalize.mime import clean_header_value
from .settings import EmailAccount, EmailAccounts
from .state import EmailState

log = get_logger(service="email", component="sender")
OUTBOUND = Counter("intake_email_outbound_total", "Outbound mail by outcome", ["service", "status"])
# 30 s, 1 min, 5 min, 15 min, 30 min, then hourly: the 30th attempt is about 24 h after the first.
RETRY_DELAYS_S = (30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)
MAX_ATTEMPTS = 30


def message_id_for(message: OutboundMessage, account: EmailAccount) -> str:
    """`<N.<outbound id>@<account domain>>`: stable across retries, carrying the ticket."""
    number = message.ticket_number if (message.ticket_number or "").isdigit() else "0"
    return f"<{number}.{message.id}@{account.domain}>"


def _content_type(attachment: Attachment) -> tuple[str, str]:
    """The attachment's type as `add_attachment` wants it; anything odd is octet-stream."""
    maintype, _, subtype = attachment.content_type.split(";")[0].strip().lower().partition("/")
    if re2.fullmatch(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}", maintype or "-") and \
            re2.fullmatch(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}", subtype or "-") and \
            maintype not in ("multipart", "message"):
        return maintype, subtype
    return "application", "octet-stream"


def _attach(mail: EmailMessage, attachments: list[tuple[Attachment, bytes]]) -> None:
    """Each attachment as a base64 part; inline ones with a `Content-ID` next to the HTML.

    An inline image with a content id goes into `multipart/related` with the HTML, so `cid:`
    references show in the reader; every other file is a plain attachment. File names and
    content ids come from ticket data: they pass `clean_header_value` like every header.
    """
    html_part = None
    if any(a.inline and a.content_id for a, _ in attachments) and mail.is_multipart():
        html_part = next((p for p in mail.iter_parts() if p.get_content_type() == "text/html"),
                         None)
    for attachment, data in attachments:
        maintype, subtype = _content_type(attachment)
        name = clean_header_value(attachment.filename) or "attachment"
        headers: dict[str, Any] = {"filename": name}
        cid = clean_header_value(attachment.content_id or "").strip("<> ")
        if attachment.inline and cid and html_part is not None:
            html_part.add_related(data, maintype=maintype, subtype=subtype,
                                  disposition="inline", cid=f"<{cid}>", **headers)
            continue
        if attachment.inline and cid:
            headers["cid"] = f"<{cid}>"
        mail.add_attachment(data, maintype=maintype, subtype=subtype,
                            disposition="inline" if attachment.inline else "attachment",
                            **headers)


def build_mail(message: OutboundMessage, account: EmailAccount, accounts: EmailAccounts,
               attachments: list[tuple[Attachment, bytes]] | None = None) -> EmailMessage:
    """The mail for `message` with `attachments` (each with its bytes from the blob store);
    no header built from customer data carries CR, LF or NUL."""
    mail = EmailMessage(policy=SMTP_POLICY)
    mail["From"] = account.address
    mail["To"] = clean_header_value(message.to.value)
    subject = clean_header_value(message.subject or "")
    number = message.ticket_number
    if number and ticket_number_from_subject(subject, accounts.ticket_tag.patterns) != number:
        tag = accounts.ticket_tag.format.replace("{number}", number)
        subject = f"{tag} {subject}".strip()
    mail["Subject"] = subject
    mail["Message-ID"] = message_id_for(message, account)
    mail["Date"] = email.utils.format_datetime(message.created_at)
    thread = message.thread
    if thread is not None:
        references = [clean_header_value(r) for r in thread.references if r]
        if thread.in_reply_to:
            in_reply_to = clean_header_value(thread.in_reply_to)
            mail["In-Reply-To"] = in_reply_to
            if in_reply_to not in references:
                references.append(in_reply_to)
        if references:
            mail["References"] = " ".join(trim_references(references)[:MAX_REFERENCES])
    if account.reply_to_plus and number:
        local, _, domain = account.address.partition("@")
        mail["Reply-To"] = f"{local}+t{number}@{domain}"
    if message.kind != "reply":
        mail["Auto-Submitted"] = "auto-replied"  # RFC 3834 section 5
        mail["X-Auto-Response-Suppress"] = "All"  # no out-of-office back from Exchange
    mail["X-Loop"] = account.address
    mail.set_content(message.text.replace("\x00", ""))
    if message.html:
        mail.add_alternative(message.html, subtype="html")
    if attachments:
        _attach(mail, attachments)
    return mail


class EmailSender:
    """The email channel's `OutboundSender` (see intake/sending.py for the runner's part)."""

    max_attempts = MAX_ATTEMPTS
    retry_delays_s = RETRY_DELAYS_S
    send_timeout_s = 120.0

    def __init__(self, kit: SenderKit) -> None:
        self.kit = kit
        accounts = kit.accounts
        if not isinstance(accounts, EmailAccounts):
            accounts = EmailAccounts()
        self.accounts = accounts
        self.state = EmailState(kit.state)
        self._no_auto = re2.compile(accounts.no_auto_reply_to)
        self.blobs: Any = None  # the blob store holding reply attachments (opened on first use)
        self._tokens: dict[str, TokenSource] = {}  # XOAUTH2 relays' tokens, per account

    async def close(self) -> None:
        if self.blobs is not None:
            await self.blobs.close()
            self.blobs = None

    async def _attachment_bytes(self, message: OutboundMessage,
                                ) -> list[tuple[Attachment, bytes]] | SendOutcome:
        """Each attachment's bytes from the kernel's blob store, checked against its sha256.

        A blob that is gone or differs is `failed` (`attachment_missing`): retrying would not
        bring it back, and a reply without the file the agent attached must not go out. A
        store that cannot be read now (a disk error) is retried.
        """
        if not message.attachments:
            return []
        if self.blobs is None:
            self.blobs = blob_store_for(IntakeSettings())
        loaded: list[tuple[Attachment, bytes]] = []
        for attachment in message.attachments:
            try:
                data = await self.blobs.get(attachment.blob)
            except (FileNotFoundError, ValueError):
                return Failed("attachment_missing", f"{attachment.filename}: blob "
                                                    f"{attachment.blob} is not in the store")
            except OSError as exc:
                log.warning("attachment_unreadable", outbound_id=str(message.id),
                            error=repr(exc)[:200])
                return RetryLater("blob_store_unavailable")
            if hashlib.sha256(data).hexdigest() != attachment.sha256:
                return Failed("attachment_missing", f"{attachment.filename}: blob "
                                                    f"{attachment.blob} differs from its sha256")
            loaded.append((attachment, data))
        return loaded

    async def send(self, message: OutboundMessage) -> SendOutcome:
        account = self.accounts.find(message.account)
        if account is None:
            return self._counted(Failed("account_unknown", message.account))
        if account.outbound is None:
            return self._counted(Failed("no_relay", f"{account.id} has no outbound relay"))
        if message.to.kind != "email":
            return self._counted(Failed("not_an_email_address", message.to.kind))
        recipient = message.to.value.strip()
        if not re2.fullmatch(r"[^\s<>,;@]+@[^\s<>,;@]+", recipient):
            return self._counted(Failed("address_invalid", recipient[:200]))
        if message.kind != "reply":
            held = await self._held_back(recipient)
            if held is not None:
                log.info("outbound_suppressed", outbound_id=str(message.id), reason=held)
                return self._counted(Suppressed(held))
        files = await self._attachment_bytes(message)
        if not isinstance(files, list):
            return self._counted(files)
        mail = build_mail(message, account, self.accounts, files)
        return self._counted(await self._deliver(mail, account, recipient, message))

    async def _held_back(self, recipient: str) -> str | None:
        """Why automatic mail to `recipient` is held back, or None."""
        if recipient.lower() in self.accounts.our_addresses:
            return "own_address"
        if self._no_auto.search(recipient):
            return "no_auto_reply_to"
        if await self.state.bounced_recently(recipient):
            return "bounced"
        limits = self.accounts.auto_mail_limits
        if not await self.state.take_cap(recipient, limits.per_recipient_per_hour,
                                         limits.per_recipient_per_day):
            return "cap"
        return None

    async def _deliver(self, mail: EmailMessage, account: EmailAccount, recipient: str,
                       message: OutboundMessage) -> SendOutcome:
        relay = account.outbound
        assert relay is not None
        login: dict[str, Any] = {
            "username": relay.username,
            "password": relay.password.get_secret_value() if relay.password else None}
        tokens = self._token_source(account)
        if tokens is not None:  # XOAUTH2: aiosmtplib asks for the token at each login
            login = {"username": relay.username or account.address,
                     "oauth_token_generator": tokens.access_token}
        client = aiosmtplib.SMTP(
            hostname=relay.host, port=relay.port, timeout=relay.timeout_s,
            use_tls=relay.security == "tls",
            start_tls=True if relay.security == "starttls" else False, **login)
        try:
            async with client:
                too_large = await self._over_relay_size(client, mail, account, recipient)
                if too_large is not None:
                    return too_large
                _refused, answer = await client.send_message(
                    mail, sender=account.address, recipients=[recipient])
        except (TokenRefused, TokenUnavailable) as exc:
            log.warning("relay_token_unavailable", account=account.id, error=str(exc)[:300])
            return RetryLater("oauth2_token_unavailable")
        except aiosmtplib.SMTPAuthenticationError as exc:
            # A wrong password or a revoked grant is fixed in the config, not by the sender:
            # the mail waits in the retry queue meanwhile instead of failing.
            if tokens is not None:
                tokens.forget()
            log.warning("relay_auth_failed", account=account.id, code=exc.code)
            return RetryLater(f"relay_auth_failed_{exc.code}")
        except aiosmtplib.SMTPNotSupported as exc:
            return Failed("smtputf8_unsupported", str(exc)[:500])
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return self._answer(exc.recipients[0].code, exc.recipients[0].message)
        except aiosmtplib.SMTPResponseException as exc:
            return self._answer(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.info("relay_unreachable", account=account.id, error=repr(exc)[:300])
            return RetryLater("relay_unavailable")
        log.info("outbound_sent", outbound_id=str(message.id), answer=answer[:200])
        return Sent(provider_message_id=str(mail["Message-ID"]))

    @staticmethod
    async def _over_relay_size(client: aiosmtplib.SMTP, mail: EmailMessage,
                               account: EmailAccount, recipient: str) -> Failed | None:
        """`too_large_for_relay` when the mail is larger than the relay's `SIZE` (RFC 1870).

        Asked after EHLO, before `MAIL`: a reply with a 40 MiB attachment to a relay that
        takes 25 MiB fails at once with a reason an agent can act on (send a link instead),
        not after uploading it, and not as a bare `552`. The size is the one `send_message`
        will put on the wire (8BITMIME and SMTPUTF8 as the relay offers them). A relay that
        advertises no limit (no `SIZE`, or `SIZE 0`) is given the mail to judge.
        """
        if client.is_ehlo_or_helo_needed:
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                return None  # an old relay without EHLO advertises no SIZE; send_message HELOs
        advertised = client.esmtp_extensions.get("size", "").strip()
        limit = int(advertised) if advertised.isdigit() else 0
        if limit <= 0:
            return None
        utf8 = not (account.address + recipient).isascii()
        cte_type = "8bit" if client.supports_extension("8bitmime") else "7bit"
        wire = flatten_message(mail, utf8=utf8, cte_type=cte_type)
        size = len(wire.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
        if size <= limit:
            return None
        log.warning("outbound_too_large_for_relay", account=account.id, size=size, limit=limit)
        return Failed("too_large_for_relay",
                      f"the mail is {size} bytes; the relay accepts at most {limit} (SIZE)")

    def _token_source(self, account: EmailAccount) -> TokenSource | None:
        relay = account.outbound
        if relay is None or relay.auth != "xoauth2" or relay.oauth2 is None:
            return None
        if account.id not in self._tokens:
            self._tokens[account.id] = TokenSource(f"{account.id}:smtp", relay.oauth2,
                                                   token_namespace(self.kit.state))
        return self._tokens[account.id]

    @staticmethod
    def _answer(code: int, text: str) -> SendOutcome:
        """A 4xx waits in the retry queue; a 5xx is `failed` and dead-lettered with the relay's
        answer (nothing went out), so `intake dlq replay` sends it once the cause is fixed."""
        if 400 <= code < 500:
            return RetryLater(f"relay_deferred_{code}")
        return Failed("relay_rejected", f"{code} {text}"[:500], dead_letter=True)

    @staticmethod
    def _counted(outcome: SendOutcome) -> SendOutcome:
        status = {Sent: "sent", Failed: "failed", Suppressed: "suppressed",
                  RetryLater: "deferred"}.get(type(outcome), "other")
        OUTBOUND.labels("email", status).inc()
        return outcome


__all__ = ["EmailSender", "build_mail", "message_id_for"]
