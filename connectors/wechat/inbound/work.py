"""The work that comes after WeChat's answer: media downloads and user-info lookups.

A callback that needs either is durable once its job is in the state store's `wechat:work`
queue; the worker fetches what it needs, then publishes the finished message. A transient
failure is retried with backoff (media ids live three days); a permanent one publishes the
message anyway, flagged `attachment_missing` with the reason in its text. A failed user-info
lookup never holds a message back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import Counter

from intake import (
    Attachment,
    BlobTooLarge,
    Publisher,
    Transient,
    clean_original_filename,
    digest_of,
    get_logger,
    sanitize_filename,
)

from ..client import WechatClient
from ..errors import ApiError, ApiRefused
from ..normalize import Callback, Enrichment, Media, to_message
from ..settings import OfficialAccount, WechatAccounts, WechatSettings
from ..state import SEP, WechatState

MEDIA_LIFETIME_S = 3 * 86400
RETRY_DELAYS_S = (1.0, 5.0, 30.0, 120.0, 600.0)
LEASE_S = 300.0
PRUNE_EVERY_S = 60.0
MAX_FAILED_ATTEMPTS = 5  # unexpected failures before a job is abandoned (logged, raw kept)
EXTENSIONS = {"image": "jpg", "voice": "amr", "video": "mp4", "shortvideo": "mp4"}
MEDIA_DOWNLOADS = Counter("intake_wechat_media_downloads_total",
                          "Media downloads by account and outcome",
                          ["service", "account", "outcome"])
USER_LOOKUPS = Counter("intake_wechat_user_lookups_total",
                       "User-info lookups by account and outcome",
                       ["service", "account", "outcome"])
log = get_logger(service="wechat", component="work")


def job_of(callback: Callback, *, message_id: uuid.UUID, received_at: datetime,
           trace_id: str, raw: str) -> dict[str, Any]:
    return {"fields": callback.fields, "account": callback.account,
            "account_kind": callback.account_kind, "verified": callback.verified,
            "corp_id": callback.corp_id, "wechat_event": callback.wechat_event,
            "id": str(message_id),
            "received_at": received_at.isoformat(), "trace_id": trace_id, "raw": raw}


def callback_of(job: dict[str, Any]) -> Callback:
    return Callback(fields=dict(job["fields"]), account=job["account"],
                    account_kind=job["account_kind"], verified=bool(job["verified"]),
                    corp_id=job.get("corp_id"), wechat_event=job.get("wechat_event"))


@dataclass
class Worker:
    """Runs the work queue: one job at a time per claim, several claims in parallel."""

    settings: WechatSettings
    accounts: WechatAccounts
    state: WechatState
    client: WechatClient | None
    publisher: Any
    blobs: Any
    poll_s: float = 0.5
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    _lookups: dict[str, asyncio.Future[str | None]] = field(default_factory=dict)

    async def run_forever(self) -> None:
        pruned_at = 0.0
        while True:
            try:
                if time.monotonic() - pruned_at > PRUNE_EVERY_S:
                    pruned_at = time.monotonic()
                    await self.prune()
                done = await self.run_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("work_failed")
                done = 0
            if done:
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.poll_s)

    async def prune(self) -> int:
        """Forget nonces older than their account's clock-skew window (twice, to be safe) and
        accepted keys older than INTAKE_WECHAT_ACCEPTED_KEYS_TTL_S."""
        removed = 0
        for account in self.accounts.accounts:
            removed += await self.state.prune_nonces(
                account.id, time.time() - 2 * account.max_clock_skew_s)
            removed += await self.state.prune_accepted(
                account.id, time.time() - self.settings.accepted_keys_ttl_s)
        return removed

    async def run_due(self, limit: int = 32) -> int:
        claimed = await self.state.work.claim(limit, lease_s=LEASE_S)
        await asyncio.gather(*(self._run(item.id, item.item, item.attempts, item.created_at)
                               for item in claimed))
        return len(claimed)

    async def _run(self, item_id: int, job: dict[str, Any], attempts: int,
                   created_at: float) -> None:
        callback = callback_of(job)
        expired = time.time() - created_at > MEDIA_LIFETIME_S
        try:
            enrichment = await self.enrich(callback, final=expired)
            message = to_message(callback, message_id=uuid.UUID(job["id"]),
                                 received_at=datetime.fromisoformat(job["received_at"]),
                                 trace_id=job["trace_id"], raw=job["raw"], enrichment=enrichment)
            await self.publisher.publish(message)
        except (ApiError, Transient) as exc:
            delay = RETRY_DELAYS_S[min(attempts, len(RETRY_DELAYS_S) - 1)]
            log.info("work_retry_scheduled", account=callback.account, reason=exc.reason,
                     delay_s=delay, idempotency_key=callback.idempotency_key)
            await self.state.work.retry(item_id, delay_s=delay)
            return
        except Exception as exc:  # a bug or a refusal (message too large): never a loop
            if attempts + 1 < MAX_FAILED_ATTEMPTS:
                log.exception("work_failed", idempotency_key=callback.idempotency_key)
                await self.state.work.retry(item_id, delay_s=RETRY_DELAYS_S[-1])
                return
            # Kept for ops: the raw callback stays in the blob store under `raw`.
            log.error("work_abandoned", idempotency_key=callback.idempotency_key,
                      account=callback.account, raw=job["raw"], error=repr(exc)[:300])
            await self.state.work.done(item_id)
            return
        await self.state.work.done(item_id)
        log.info("message_published_after_work", account=callback.account,
                 idempotency_key=callback.idempotency_key, attachments=len(message.attachments),
                 flags=message.flags)

    async def enrich(self, callback: Callback, *, final: bool = False) -> Enrichment:
        """The unionid and the media; raises ApiError for a transient media failure unless
        `final` (then the media is reported missing)."""
        unionid = await self.unionid(callback)
        media: list[Media] = []
        if callback.needs_media:
            try:
                media.append(await self.download(callback))
            except ApiError as exc:
                if not final:
                    raise
                media.append(Media(missing_reason=f"gave up after three days: {exc}"))
        return Enrichment(unionid=unionid, media=media)

    async def unionid(self, callback: Callback) -> str | None:
        """The sender's unionid: cached per account and openid, one lookup in flight."""
        account = self.accounts.find(callback.account)
        if not isinstance(account, OfficialAccount) or self.client is None:
            return None
        key = SEP.join((account.id, callback.sender))
        cached = await self.state.user(account.id, callback.sender)
        if cached is not None and time.time() - float(cached["at"]) < self.settings.user_info_ttl_s:
            found = cached.get("unionid")
            return str(found) if found else None
        pending = self._lookups.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._lookups[key] = future
        try:
            try:
                value = await self.client.unionid(account, callback.sender)
            except (ApiError, ApiRefused) as exc:
                USER_LOOKUPS.labels("wechat", account.id, "failed").inc()
                log.info("user_lookup_failed", account=account.id, error=str(exc))
                future.set_result(None)
                return None
            USER_LOOKUPS.labels("wechat", account.id, "found" if value else "no_unionid").inc()
            await self.state.put_user(account.id, callback.sender,
                                      {"unionid": value, "at": time.time()})
            future.set_result(value)
            return value
        finally:
            self._lookups.pop(key, None)

    async def download(self, callback: Callback) -> Media:
        account = self.accounts.find(callback.account)
        if account is None or self.client is None:
            return Media(missing_reason="no WeChat API client for this account")
        media_id = callback.fields.get("MediaId", "").strip()
        try:
            download = await self.client.media(account, media_id)
            try:
                stored = await self.blobs.put_stream(download.chunks,
                                                     max_bytes=self.settings.max_media_bytes)
            finally:
                await download.chunks.aclose()  # the response is released even if cut short
        except ApiRefused as exc:
            MEDIA_DOWNLOADS.labels("wechat", account.id, "refused").inc()
            return Media(missing_reason=f"WeChat refused the media id: {exc}")
        except BlobTooLarge:
            MEDIA_DOWNLOADS.labels("wechat", account.id, "too_large").inc()
            return Media(missing_reason=f"over {self.settings.max_media_bytes} bytes")
        except ApiError:
            MEDIA_DOWNLOADS.labels("wechat", account.id, "retried").inc()
            raise
        except OSError as exc:
            raise ApiError(f"blob store: {exc}") from exc
        MEDIA_DOWNLOADS.labels("wechat", account.id, "stored").inc()
        kind = callback.msg_type
        original = download.filename or f"{kind}-{media_id[:32]}.{EXTENSIONS.get(kind, 'bin')}"
        return Media(attachment=Attachment(
            filename=sanitize_filename(original),
            original_filename=clean_original_filename(original),
            content_type=download.content_type or "application/octet-stream",
            size=stored.size, sha256=digest_of(stored.ref), blob=stored.ref))


__all__ = ["Publisher", "Worker", "callback_of", "job_of"]
