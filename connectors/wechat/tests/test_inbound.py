"""The callback endpoint: every bad request refused with its reason, log line and count; retries
deduplicated; media and user info fetched after the answer; the passive reply."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
import structlog
from wechatpy.crypto import WeChatCrypto

from connectors.wechat.inbound.callback import CALLBACKS
from intake.testing import RecordingPublisher, RefusingPublisher

from .conftest import Edge
from .fake_wechat import Media
from .simulator import COMPAT, PLAIN, SAFE, WECOM, Request, callback, text_xml, url_check


def count(account: str, outcome: str) -> float:
    return float(CALLBACKS.labels("wechat", account, outcome)._value.get())


def image_xml(account: dict[str, Any], media_id: str, msg_id: str = "7000000000000000001",
              kind: str = "image", sender: str = "oImageOpenid00000000000000") -> str:
    extra = "<PicUrl><![CDATA[http://mmbiz.qpic.cn/x]]></PicUrl>" if kind == "image" else ""
    return (f"<xml><ToUserName><![CDATA[{account['original_id']}]]></ToUserName>"
            f"<FromUserName><![CDATA[{sender}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[{kind}]]></MsgType>"
            f"{extra}<MediaId><![CDATA[{media_id}]]></MediaId><MsgId>{msg_id}</MsgId></xml>")


# -- the URL check ------------------------------------------------------------------------------


async def test_the_url_check_echoes_the_echostr_only_when_signed(edge: Edge) -> None:
    assert await edge.get(url_check(PLAIN, "hello")) == (200, "hello")
    forged = url_check(PLAIN, "hello")
    forged.query["signature"] = "0" * 40
    status, body = await edge.get(forged)
    assert status == 403 and "hello" not in body and "bad_signature" in body


async def test_a_wecom_url_check_answers_the_decrypted_echostr_bare(edge: Edge) -> None:
    response = await edge.client.get("/wechat/wx5823bf96d3bd56c7-218",
                                     params=url_check(WECOM, "1616140317555161061").query)
    assert response.status == 200
    assert await response.read() == b"1616140317555161061"  # no quotes, BOM or newline


# -- every bad request ----------------------------------------------------------------------------


def _forge(request: Request, **query: str) -> Request:
    return Request(request.path, {**request.query, **query}, request.body)


def _plain(content: str = "hi", **kw: Any) -> Request:
    return callback(PLAIN, text_xml(PLAIN, content, **kw))


BAD = {
    "account_unknown": (lambda: Request("/wechat/nope", _plain().query, _plain().body), 404),
    "bad_signature": (lambda: _forge(_plain(), signature="f" * 40), 403),
    "missing_signature": (lambda: Request(_plain().path, {k: v for k, v in _plain().query.items()
                                                          if k != "signature"}, b"<xml/>"), 403),
    "stale_timestamp": (lambda: callback(PLAIN, text_xml(PLAIN, "x"),
                                         timestamp=str(int(time.time()) - 3600)), 403),
    "not_a_number": (lambda: callback(PLAIN, text_xml(PLAIN, "x"), timestamp="soon"), 403),
    "wrong_mode_plain_to_safe": (lambda: Request(
        "/wechat/wx2c2769f8efd9abc2", callback(PLAIN, text_xml(SAFE, "x")).query,
        text_xml(SAFE, "x").encode()), 403),
    "wrong_mode_aes_to_plain": (lambda: Request(
        "/wechat/wx1111111111111111", callback(SAFE, text_xml(SAFE, "x")).query,
        callback(SAFE, text_xml(SAFE, "x")).body), 403),
    "wrong_recipient": (lambda: callback(PLAIN, text_xml(SAFE, "x")), 403),
    "bad_xml": (lambda: callback(PLAIN, "<xml><MsgType>text</MsgType>"), 400),
    "no_msgtype": (lambda: callback(PLAIN, "<xml><FromUserName>o</FromUserName></xml>"), 400),
    "root_not_xml": (lambda: callback(PLAIN, "<html><MsgType>text</MsgType></html>"), 400),
}
REASONS = {"missing_signature": "bad_signature", "not_a_number": "stale_timestamp",
           "wrong_mode_plain_to_safe": "wrong_mode", "wrong_mode_aes_to_plain": "wrong_mode",
           "no_msgtype": "bad_xml", "root_not_xml": "bad_xml"}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_a_bad_request_is_refused_with_its_reason_log_line_and_count(
        edge: Edge, case: str) -> None:
    make, status = BAD[case]
    request = make()
    reason = REASONS.get(case, case)
    account = request.path.rsplit("/", 1)[1]
    label = account if account != "nope" else "unknown"
    before = count(label, reason)
    with structlog.testing.capture_logs() as logs:
        got, body = await edge.send(request)
    assert got == status, body
    assert f'"error": "{reason}"' in body or f'"error":"{reason}"' in body
    [line] = [e for e in logs if e["event"] == "callback_refused"]
    assert line["reason"] == reason and line["account"] == label and line["peer"]
    assert not any(secret in repr(line) for secret in ("intakeplain2026", "spamtest"))
    assert count(label, reason) == before + 1
    assert edge.publisher.messages == []


async def test_a_nonce_replayed_with_another_body_is_a_forgery_and_the_same_body_a_retry(
        edge: Edge) -> None:
    first = _plain("first", msg_id="1")
    assert (await edge.send(first))[0] == 200
    assert (await edge.send(first))[0] == 200  # WeChat's retry: same body
    forged = Request(first.path, first.query, text_xml(PLAIN, "forged", msg_id="2").encode())
    status, body = await edge.send(forged)
    assert status == 403 and "replayed_nonce" in body
    await edge.drain_work()
    assert [m.text for m in edge.publisher.messages] == ["first"]


@pytest.mark.parametrize("ciphertext", [
    "not base64!!", "QUJD", "A" * 22 + "==",  # not base64, not whole blocks, one garbage block
])
async def test_garbage_ciphertext_is_decrypt_failed(edge: Edge, ciphertext: str) -> None:
    good = callback(SAFE, text_xml(SAFE, "x"))
    body = f"<xml><ToUserName>gh_10f6c3c3ac5a</ToUserName><Encrypt>{ciphertext}</Encrypt></xml>"
    from .simulator import sha1_signature

    query = {**good.query, "msg_signature": sha1_signature(
        "spamtest", good.query["timestamp"], good.query["nonce"], ciphertext)}
    status, text = await edge.send(Request(good.path, query, body.encode()))
    assert status == 403 and "decrypt_failed" in text


async def test_a_ciphertext_for_another_app_id_is_decrypt_failed(edge: Edge) -> None:
    other = {**SAFE, "app_id": "wx9999999999999999"}
    status, text = await edge.send(callback(other, text_xml(SAFE, "x")))
    assert status == 403 and "decrypt_failed" in text


async def test_an_oversized_body_is_refused_while_read(edge: Edge) -> None:
    request = _plain("x" * (2 * 1024 * 1024))
    status, text = await edge.send(request)
    assert status == 413 and "payload_too_large" in text


async def test_other_methods_are_405(edge: Edge) -> None:
    response = await edge.client.put("/wechat/wx1111111111111111", data=b"x")
    assert response.status == 405


# -- what is kept ---------------------------------------------------------------------------------


async def test_compatible_mode_uses_only_the_decrypted_content(edge: Edge) -> None:
    request = callback(COMPAT, text_xml(COMPAT, "the signed text"))
    body = request.body.replace(b"the signed text", b"a contradicting plaintext", 1)
    assert b"a contradicting plaintext" in body
    assert (await edge.send(Request(request.path, request.query, body)))[0] == 200
    await edge.drain_work()
    [message] = edge.publisher.messages
    assert message.text == "the signed text" and message.sender.identities[0].verified


@pytest.mark.parametrize("msg_ids", [("9007199254740992", "9007199254740993"),
                                     ("18446744073709551614", "18446744073709551615")])
async def test_msg_ids_that_a_double_cannot_tell_apart_are_two_messages(
        edge: Edge, msg_ids: tuple[str, str]) -> None:
    for msg_id in msg_ids:
        assert (await edge.send(callback(WECOM, text_xml(WECOM, "x", msg_id=msg_id))))[0] == 200
    keys = [m.idempotency_key for m in edge.publisher.messages]
    assert keys == [f"wechat:wx5823bf96d3bd56c7-218:{i}" for i in msg_ids]


async def test_a_long_text_with_emoji_survives_exactly(edge: Edge) -> None:
    text = ("客服你好 😀 /::) [微笑] <&> " * 1000)[:20000]
    assert (await edge.send(callback(WECOM, text_xml(WECOM, text))))[0] == 200
    assert edge.publisher.messages[0].text == text


async def test_a_callback_retried_four_times_two_at_once_is_one_message_and_one_download(
        edge: Edge) -> None:
    edge.fake.media["M1"] = Media(body=b"\xff\xd8jpeg-bytes", filename="IMG_0001.jpg")
    request = callback(SAFE, image_xml(SAFE, "M1"))
    before = count(SAFE["id"], "duplicate")
    first = await edge.send(request)
    together = await asyncio.gather(edge.send(request), edge.send(request))
    last = await edge.send(request)
    assert [a[0] for a in (first, *together, last)] == [200] * 4
    assert count(SAFE["id"], "duplicate") == before + 3
    await edge.drain_work()
    await edge.send(request)  # after the download too
    [message] = edge.publisher.messages
    assert edge.fake.calls["media_get"] == 1
    [attachment] = message.attachments
    assert (attachment.filename, attachment.content_type, attachment.size) == (
        "IMG_0001.jpg", "image/jpeg", 12)
    assert attachment.sha256 == __import__("hashlib").sha256(b"\xff\xd8jpeg-bytes").hexdigest()
    assert await edge.blobs.get(attachment.blob) == b"\xff\xd8jpeg-bytes"


async def test_a_video_is_fetched_from_its_video_url(edge: Edge) -> None:
    edge.fake.media["V1"] = Media(body=b"mp4" * 100, video=True)
    await edge.send(callback(PLAIN, image_xml(PLAIN, "V1", kind="video")))
    await edge.drain_work()
    [message] = edge.publisher.messages
    assert message.attachments[0].size == 300 and edge.fake.calls["video"] == 1


async def test_an_invalid_media_id_publishes_the_message_flagged_attachment_missing(
        edge: Edge) -> None:
    await edge.send(callback(PLAIN, image_xml(PLAIN, "GONE")))
    await edge.drain_work()
    [message] = edge.publisher.messages
    assert message.flags == ["attachment_missing"] and "40007" in message.text


async def test_a_slow_media_endpoint_does_not_slow_the_answer(edge: Edge) -> None:
    edge.fake.media["SLOW"] = Media(body=b"late", delay_s=7)
    started = time.monotonic()
    assert (await edge.send(callback(SAFE, image_xml(SAFE, "SLOW"))))[0] == 200
    assert time.monotonic() - started < 1.0
    assert edge.publisher.messages == []
    await edge.drain_work(timeout_s=15)
    assert edge.publisher.messages[0].attachments[0].size == 4


async def test_the_unionid_joins_two_accounts_openids(edge: Edge) -> None:
    edge.fake.unionids = {"oSafe1": "uUNION1", "oCompat1": "uUNION1"}
    await edge.send(callback(SAFE, text_xml(SAFE, "a", sender="oSafe1", msg_id="1")))
    await edge.send(callback(COMPAT, text_xml(COMPAT, "b", sender="oCompat1", msg_id="2")))
    await edge.drain_work()
    unions = {m.account: [(i.kind, i.value, i.verified) for i in m.sender.identities]
              for m in edge.publisher.messages}
    assert unions[SAFE["id"]][1] == ("wechat_unionid", "uUNION1", True)
    assert unions[COMPAT["id"]][1] == ("wechat_unionid", "uUNION1", True)
    # Cached: the next message from the same openid is published at once, no lookup.
    lookups = edge.fake.calls["user_info"]
    await edge.send(callback(SAFE, text_xml(SAFE, "c", sender="oSafe1", msg_id="3")))
    assert edge.publisher.messages[-1].text == "c" and edge.fake.calls["user_info"] == lookups


async def test_a_failed_lookup_does_not_hold_the_message_back(edge: Edge) -> None:
    edge.fake.user_info_fails = True
    await edge.send(callback(SAFE, text_xml(SAFE, "still here")))
    await edge.drain_work()
    [message] = edge.publisher.messages
    assert [i.kind for i in message.sender.identities] == ["wechat_openid"]


async def test_the_passive_reply_is_encrypted_in_safe_mode_and_sent_once_per_interval(
        edge: Edge) -> None:
    request = callback(SAFE, text_xml(SAFE, "hi", sender="oPassive", msg_id="11"))
    status, body = await edge.send(request)
    assert status == 200 and "<Encrypt>" in body
    fields = dict(re.findall(r"<(\w+)>(?:<!\[CDATA\[)?(.*?)(?:\]\]>)?</\1>", body))
    crypto = WeChatCrypto(SAFE["token"], SAFE["key"], SAFE["app_id"])
    reply = crypto.decrypt_message(body, fields["MsgSignature"], fields["TimeStamp"],
                                   fields["Nonce"])
    assert "<ToUserName><![CDATA[oPassive]]></ToUserName>" in reply
    assert "<FromUserName><![CDATA[gh_10f6c3c3ac5a]]></FromUserName>" in reply
    again = callback(SAFE, text_xml(SAFE, "hi again", sender="oPassive", msg_id="12"))
    assert await edge.send(again) == (200, "success")


async def test_success_only_once_durable(make_edge: Any) -> None:
    edge = await make_edge(RefusingPublisher())
    status, _ = await edge.send(callback(WECOM, text_xml(WECOM, "x")))
    assert status == 503
    # ...and the same callback is accepted once the publisher works again (no stale key).
    assert not await edge.runtime.state.was_accepted(
        "wechat:wx5823bf96d3bd56c7-218:1234567890123456", 3600)


async def test_a_callback_not_durable_within_the_deadline_is_503(make_edge: Any) -> None:
    class Stalling:
        async def publish(self, message: Any, exchange: str = "inbound", *,
                          timeout: float | None = None) -> None:
            await asyncio.sleep(30)

    edge = await make_edge(Stalling(), callback_deadline_s=0.3)
    started = time.monotonic()
    status, _ = await edge.send(callback(WECOM, text_xml(WECOM, "x")))
    assert status == 503 and time.monotonic() - started < 2


async def test_nonces_older_than_the_window_are_pruned(edge: Edge) -> None:
    old = str(int(time.time()) - 3600)
    state = edge.runtime.state
    await state.note_nonce(PLAIN["id"], old, "n1", "s", "d")
    assert (await edge.send(_plain("fresh")))[0] == 200
    assert await edge.runtime.worker.prune() == 1
    keys = [key for key, _ in await state.nonces.items()]
    assert len(keys) == 1 and old not in keys[0]


async def test_a_job_that_keeps_failing_is_abandoned_with_its_raw_kept(make_edge: Any) -> None:
    class TooLarge(RecordingPublisher):
        async def publish(self, message: Any, exchange: str = "inbound", *,
                          timeout: float | None = None) -> None:
            from intake import MessageTooLarge

            raise MessageTooLarge("too large")

    edge = await make_edge(TooLarge())
    edge.fake.media["BIG"] = Media(body=b"x")
    assert (await edge.send(callback(SAFE, image_xml(SAFE, "BIG"))))[0] == 200
    [claimed] = await edge.runtime.state.work.claim(1)
    with structlog.testing.capture_logs() as logs:
        await edge.runtime.worker._run(claimed.id, claimed.item, 0, claimed.created_at)
        assert await edge.runtime.state.work.depth() == 1  # retried later
        await edge.runtime.worker._run(claimed.id, claimed.item, 4, claimed.created_at)
    assert await edge.runtime.state.work.depth() == 0
    [abandoned] = [e for e in logs if e["event"] == "work_abandoned"]
    assert abandoned["raw"].startswith("sha256:")


async def test_media_over_the_limit_is_not_kept_and_the_message_says_so(make_edge: Any) -> None:
    edge = await make_edge(max_media_bytes=1024)
    edge.fake.media["HUGE"] = Media(body=b"x" * 5000)
    await edge.send(callback(WECOM, image_xml(WECOM, "HUGE")))
    await edge.drain_work()
    [message] = edge.publisher.messages
    assert message.flags == ["attachment_missing"] and "over 1024 bytes" in message.text
    assert message.attachments == []


async def test_accepted_keys_older_than_their_ttl_are_pruned(edge: Edge) -> None:
    state = edge.runtime.state
    await state.accepted.put(f"wechat:{SAFE['id']}:100", {"at": time.time() - 7200})
    await state.accepted.put(f"wechat:{SAFE['id']}:101", {"at": time.time()})
    assert await edge.runtime.worker.prune() == 1
    assert [k for k, _ in await state.accepted.items()] == [f"wechat:{SAFE['id']}:101"]
