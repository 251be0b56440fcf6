"""Calls out of the telephony connector: fetching call recordings into the blob store.

A recording URL comes from the PBX (a webhook field, `MIXMONITOR_FILENAME`, `Record-File-Path`),
so fetching it is guarded: only under the line's `recordings.allow` prefixes (anything else
would let a webhook make the gateway fetch internal URLs), no redirects, `audio/*` only, at
most `recordings.max_bytes`, streamed into the blob store chunk by chunk (a 200 MiB file is
never held in memory). A host that does not answer is retried with backoff for
`recordings.retry_for_s` (24 h) from a durable queue; the audio then follows the record.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
from prometheus_client import Counter

from intake import (
    Attachment,
    BlobStore,
    BlobTooLarge,
    Message,
    StateQueue,
    get_logger,
    sanitize_filename,
)

from .normalize import CallView, recording_id, recording_message
from .settings import LineBase, TwilioLine
from .state import Publishing, _utc

log = get_logger(service="telephony", component="recordings")

FETCHES = Counter("intake_telephony_recording_fetches_total",
                  "Recording fetches by outcome (fetched, deferred, refused, given_up)",
                  ["service", "line", "outcome"])

FETCH_TIMEOUT_S = 30.0
FIRST_RETRY_S = 5.0
MAX_RETRY_S = 900.0
CHUNK = 256 * 1024


class RecordingRefused(Exception):
    """A recording that will never be fetched: not allowed, wrong type, too large, 4xx."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RecordingUnreachable(Exception):
    """The host did not answer or answered 5xx: try again later."""


async def fetch_recording(session: aiohttp.ClientSession, blobs: BlobStore, line: LineBase,
                          url: str, *, timeout_s: float = FETCH_TIMEOUT_S) -> Attachment:
    """The recording at `url` as a stored attachment; raises RecordingRefused or
    RecordingUnreachable."""
    if not line.recordings.allows(url):
        raise RecordingRefused("not_allowed")
    headers = {}
    if isinstance(line, TwilioLine):  # Twilio serves recordings to AccountSid:AuthToken
        headers["Authorization"] = aiohttp.encode_basic_auth(
            line.account_sid, line.auth_token.get_secret_value())
    try:
        async with session.get(url, headers=headers, allow_redirects=False,
                               timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            if response.status >= 500 or response.status == 429:
                raise RecordingUnreachable(f"HTTP {response.status}")
            if response.status != 200:
                raise RecordingRefused(f"http_{response.status}")
            content_type = response.content_type or ""
            if not content_type.startswith("audio/"):
                raise RecordingRefused("not_audio")
            limit = line.recordings.max_bytes
            if response.content_length is not None and response.content_length > limit:
                raise RecordingRefused("too_large")

            async def chunks() -> AsyncIterator[bytes]:
                async for chunk in response.content.iter_chunked(CHUNK):
                    yield chunk

            try:
                stored = await blobs.put_stream(chunks(), max_bytes=limit)
            except BlobTooLarge as exc:
                raise RecordingRefused("too_large") from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise RecordingUnreachable(f"{type(exc).__name__}: {exc}") from exc
    name = sanitize_filename(url.rsplit("/", 1)[-1].split("?", 1)[0] or "recording")
    return Attachment(filename=name or "recording", content_type=content_type,
                      size=stored.size, sha256=stored.sha256, blob=stored.ref)


class RecordingFetcher:
    """Fetches a record's recording before it goes out, else queues it for a follow-up."""

    def __init__(self, lines: Mapping[str, LineBase], blobs: BlobStore, queue: StateQueue,
                 publisher: Publishing, *, clock: Any = time.time) -> None:
        self.lines = lines
        self.blobs = blobs
        self.queue = queue
        self.publisher = publisher
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def attach(self, message: Message, view: CallView) -> Message:
        """`on_record`: the record with its audio attached, or flagged why not (yet)."""
        url = view.recording_url
        if not url:
            return message
        line = self.lines[view.line]
        try:
            attachment = await fetch_recording(self.session(), self.blobs, line, url)
        except RecordingRefused as exc:
            FETCHES.labels("telephony", view.line, "refused").inc()
            log.warning("recording_not_fetched", line=view.line, call_id=view.call_id,
                        reason=exc.reason)
            return message.model_copy(update={
                "flags": [*message.flags, "recording_not_fetched"],
                "channel_data": {"recording_not_fetched": exc.reason}})
        except RecordingUnreachable as exc:
            FETCHES.labels("telephony", view.line, "deferred").inc()
            log.info("recording_deferred", line=view.line, call_id=view.call_id, error=str(exc))
            await self.queue.push({"line": view.line, "call_id": view.call_id, "url": url,
                                   "since": self.clock()}, delay_s=FIRST_RETRY_S)
            return message.model_copy(update={"flags": [*message.flags, "recording_pending"]})
        FETCHES.labels("telephony", view.line, "fetched").inc()
        return message.model_copy(update={"attachments": [*message.attachments, attachment]})

    async def follow_up(self, view: CallView, url: str) -> None:
        """A recording that arrived after the record: fetched from the queue, then sent."""
        await self.queue.push({"line": view.line, "call_id": view.call_id, "url": url,
                               "since": self.clock()})

    async def retry_due(self, view_of: Callable[[str, str], CallView | None]) -> int:
        """Fetch what is due; `view_of(line, call_id)` gives a call's view. Returns how many
        were fetched and sent."""
        sent = 0
        for item in await self.queue.claim(10, lease_s=FETCH_TIMEOUT_S * 4):
            job = item.item
            view = view_of(job["line"], job["call_id"])
            line = self.lines.get(job["line"])
            if view is None or line is None:
                await self.queue.done(item.id)
                continue
            try:
                attachment = await fetch_recording(self.session(), self.blobs, line, job["url"])
            except RecordingRefused as exc:
                FETCHES.labels("telephony", line.id, "refused").inc()
                log.warning("recording_not_fetched", line=line.id, call_id=view.call_id,
                            reason=exc.reason)
                await self.queue.done(item.id)
                continue
            except RecordingUnreachable as exc:
                if self.clock() - float(job["since"]) > line.recordings.retry_for_s:
                    FETCHES.labels("telephony", line.id, "given_up").inc()
                    log.warning("recording_not_fetched", line=line.id, call_id=view.call_id,
                                reason="unreachable", error=str(exc))
                    await self.queue.done(item.id)
                else:
                    delay = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** min(item.attempts, 12))
                    await self.queue.retry(item.id, delay_s=delay)
                continue
            await self.publisher.publish(recording_message(
                view, attachment, job["url"], received_at=_utc(self.clock())))
            await self.queue.done(item.id)
            FETCHES.labels("telephony", line.id, "fetched").inc()
            log.info("recording_fetched", line=line.id, call_id=view.call_id,
                     recording=recording_id(job["url"]), size=attachment.size)
            sent += 1
        return sent

