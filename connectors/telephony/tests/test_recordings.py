"""Recording fetches from a local HTTP server: allowed, refused, too large, wrong type,
unreachable then reachable, Twilio's basic auth."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from connectors.telephony.client import RecordingFetcher
from connectors.telephony.normalize import CallEvent, fold, record_message
from connectors.telephony.settings import GenericLine, TwilioLine
from intake import StateStore
from intake.testing import MemoryBlobStore, RecordingPublisher

AUDIO = b"RIFF" + bytes(2000)


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    up = {"flaky": False}

    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "flaky" and not up["flaky"]:
            up["flaky"] = True
            return web.Response(status=503)
        if name == "page":
            return web.Response(text="<html>", content_type="text/html")
        if name == "big":
            return web.Response(body=bytes(5000), content_type="audio/wav")
        if name == "twilio":
            if request.headers.get("Authorization") != (
                    "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjp0b2tlbg=="):
                return web.Response(status=401)
        return web.Response(body=AUDIO, content_type="audio/wav")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    server = TestServer(app)
    await server.start_server()
    yield server
    await server.close()


def line(server: TestServer, **extra: object) -> GenericLine:
    return GenericLine.model_validate({
        "id": "hotline", "adapter": "generic",
        "secret": "whsec_aW50YWtlLWhvdGxpbmUtdGVzdC1zZWNyZXQtMDAx",
        "recordings": {"allow": [str(server.make_url("/"))], "max_bytes": 4096}, **extra})


async def record_for(fetcher: RecordingFetcher, url: str, line_id: str = "hotline") -> object:
    view = fold([CallEvent(line=line_id, call_id="c1", type="ended", recording_url=url,
                           occurred_at=datetime(2026, 12, 5, tzinfo=UTC))], "CN")
    message = record_message(view, language="en", join_latest_open=False,
                             received_at=datetime(2026, 12, 5, tzinfo=UTC))
    return await fetcher.attach(message, view)


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[tuple[StateStore, RecordingPublisher]]:
    store = StateStore(f"sqlite+aiosqlite:///{tmp_path / 's.sqlite3'}")
    await store.open()
    yield store, RecordingPublisher()
    await store.close()


async def test_each_outcome_of_a_fetch(server: TestServer,
                                       parts: tuple[StateStore, RecordingPublisher]) -> None:
    store, publisher = parts
    blobs = MemoryBlobStore()
    fetcher = RecordingFetcher({"hotline": line(server)}, blobs, store.queue("rec"), publisher)
    try:
        ok = await record_for(fetcher, str(server.make_url("/c1.wav")))
        [attachment] = ok.attachments  # type: ignore[attr-defined]
        assert (attachment.content_type, attachment.size) == ("audio/wav", len(AUDIO))
        assert blobs.blobs[attachment.blob] == AUDIO
        for url, reason in (("http://169.254.169.254/latest", "not_allowed"),
                            (str(server.make_url("/page")), "not_audio"),
                            (str(server.make_url("/big")), "too_large")):
            refused = await record_for(fetcher, url)
            assert "recording_not_fetched" in refused.flags  # type: ignore[attr-defined]
            assert refused.channel_data == {  # type: ignore[attr-defined]
                "recording_not_fetched": reason}
        # Unreachable now: the record goes out pending, the audio follows it.
        pending = await record_for(fetcher, str(server.make_url("/flaky")))
        assert "recording_pending" in pending.flags  # type: ignore[attr-defined]
        assert await store.queue("rec").depth() == 1
    finally:
        await fetcher.close()


async def test_a_late_recording_follows_the_record(
        server: TestServer, parts: tuple[StateStore, RecordingPublisher]) -> None:
    store, publisher = parts
    fetcher = RecordingFetcher({"hotline": line(server)}, MemoryBlobStore(), store.queue("rec"),
                               publisher)
    view = fold([CallEvent(line="hotline", call_id="c1", type="ended",
                           occurred_at=datetime(2026, 12, 5, tzinfo=UTC))], "CN")
    try:
        await fetcher.follow_up(view, str(server.make_url("/flaky")))
        assert await fetcher.retry_due(lambda line_id, call_id: view) == 0  # 503: retried
        [item] = await store.queue("rec").claim(1, lease_s=0, due_by=1e12)
        await store.queue("rec").retry(item.id, delay_s=-1)
        assert await fetcher.retry_due(lambda line_id, call_id: view) == 1
        [message] = publisher.messages
        assert message.flags == ["call_recording"] and len(message.attachments) == 1
        assert message.idempotency_key.startswith("telephony:hotline:c1:recording:")
    finally:
        await fetcher.close()


async def test_a_host_unreachable_for_24_hours_is_given_up(
        server: TestServer, parts: tuple[StateStore, RecordingPublisher]) -> None:
    store, publisher = parts
    closed = TestServer(web.Application())
    await closed.start_server()
    url = str(closed.make_url("/gone.wav"))
    await closed.close()  # nothing listens there any more
    hotline = line(server).model_copy(update={"recordings": line(server).recordings.model_copy(
        update={"allow": [url]})})
    fetcher = RecordingFetcher({"hotline": hotline}, MemoryBlobStore(), store.queue("rec"),
                               publisher)
    view = fold([CallEvent(line="hotline", call_id="c1", type="ended",
                           occurred_at=datetime(2026, 12, 5, tzinfo=UTC))], "CN")
    try:
        await fetcher.follow_up(view, url)
        fetcher.clock = lambda: 1e12  # a day and more later
        assert await fetcher.retry_due(lambda line_id, call_id: view) == 0
        assert await store.queue("rec").depth() == 0 and publisher.messages == []
    finally:
        await fetcher.close()


async def test_twilio_recordings_are_fetched_with_basic_auth(
        server: TestServer, parts: tuple[StateStore, RecordingPublisher]) -> None:
    store, publisher = parts
    twilio = TwilioLine.model_validate({
        "id": "twilio-us", "adapter": "twilio", "account_sid": "AC0123456789abcdef0123456789abcdef",
        "auth_token": "token", "public_url": "http://127.0.0.1:8004",
        "recordings": {"allow": [str(server.make_url("/"))]}})
    fetcher = RecordingFetcher({"twilio-us": twilio}, MemoryBlobStore(), store.queue("rec"),
                               publisher)
    try:
        fetched = await record_for(fetcher, str(server.make_url("/twilio")), "twilio-us")
        assert len(fetched.attachments) == 1  # type: ignore[attr-defined]
    finally:
        await fetcher.close()
