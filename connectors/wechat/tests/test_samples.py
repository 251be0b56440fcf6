"""Known-answer tests with the samples WeChat publishes beside its WXBizMsgCrypt code."""

from __future__ import annotations

from connectors.wechat.inbound.verify import aes_key, decrypt, signature_of

from .conftest import Edge
from .simulator import SAFE, WECOM, Request, callback, sha1_signature

# Official account sample (token spamtest, AppID wx2c2769f8efd9abc2).
OA_TIMESTAMP, OA_NONCE = "1409735669", "1320562132"
OA_SIGNATURE = "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
OA_ENCRYPT = (
    "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PG"
    "HQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6"
    "tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp"
    "3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhv"
    "Ql+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=")
# WeCom samples (token QDG6eK, CorpID wx5823bf96d3bd56c7).
WECOM_URL = {"msg_signature": "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3",
             "timestamp": "1409659589", "nonce": "263014780",
             "echostr": "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8"
                        "TgAE7OaBO+FZXvnaqQ=="}
WECOM_TIMESTAMP, WECOM_NONCE = "1409659813", "1372623149"
WECOM_SIGNATURE = "477715d11cdb4164915debcba66cb864d751f3e6"
WECOM_ENCRYPT = (
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUp"
    "j911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue"
    "06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+"
    "3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH"
    "27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8"
    "R07+qN+E7Q==")


def test_the_official_account_sample_verifies_and_decrypts() -> None:
    assert signature_of("spamtest", OA_TIMESTAMP, OA_NONCE, OA_ENCRYPT) == OA_SIGNATURE
    xml = decrypt(OA_ENCRYPT, aes_key(SAFE["key"]), SAFE["app_id"]).decode()
    assert "<Content><![CDATA[abcdteT]]></Content>" in xml


def test_the_wecom_samples_verify_and_decrypt() -> None:
    q = WECOM_URL
    assert signature_of("QDG6eK", q["timestamp"], q["nonce"], q["echostr"]) == q["msg_signature"]
    assert decrypt(q["echostr"], aes_key(WECOM["key"]), WECOM["app_id"]) == b"1616140317555161061"
    assert signature_of("QDG6eK", WECOM_TIMESTAMP, WECOM_NONCE, WECOM_ENCRYPT) == WECOM_SIGNATURE
    xml = decrypt(WECOM_ENCRYPT, aes_key(WECOM["key"]), WECOM["app_id"]).decode()
    assert "<FromUserName><![CDATA[mycreate]]></FromUserName>" in xml
    assert "<Content><![CDATA[hello]]></Content>" in xml


def _oa_sample_body() -> bytes:
    return (f"<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>"
            f"<Encrypt><![CDATA[{OA_ENCRYPT}]]></Encrypt></xml>").encode()


async def test_the_2014_samples_are_refused_as_stale_and_accepted_when_signed_now(
        edge: Edge) -> None:
    stale = Request("/wechat/wx2c2769f8efd9abc2",
                    {"timestamp": OA_TIMESTAMP, "nonce": OA_NONCE, "encrypt_type": "aes",
                     "signature": sha1_signature("spamtest", OA_TIMESTAMP, OA_NONCE),
                     "msg_signature": OA_SIGNATURE}, _oa_sample_body())
    status, body = await edge.send(stale)
    assert status == 403 and "stale_timestamp" in body
    wecom_stale = Request("/wechat/wx5823bf96d3bd56c7-218",
                          {"timestamp": WECOM_TIMESTAMP, "nonce": WECOM_NONCE,
                           "msg_signature": WECOM_SIGNATURE},
                          (f"<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName>"
                           f"<Encrypt><![CDATA[{WECOM_ENCRYPT}]]></Encrypt></xml>").encode())
    status, body = await edge.send(wecom_stale)
    assert status == 403 and "stale_timestamp" in body
    status, body = await edge.get(Request("/wechat/wx5823bf96d3bd56c7-218", WECOM_URL, b""))
    assert status == 403 and "1616140317555161061" not in body
    assert edge.publisher.messages == []

    # The same plaintexts, signed (and encrypted) now by wechatpy: accepted.
    oa_xml = decrypt(OA_ENCRYPT, aes_key(SAFE["key"]), SAFE["app_id"]).decode()
    assert (await edge.send(callback(SAFE, oa_xml)))[0] == 200
    wecom_xml = decrypt(WECOM_ENCRYPT, aes_key(WECOM["key"]), WECOM["app_id"]).decode()
    status, body = await edge.send(callback(WECOM, wecom_xml))
    assert (status, body) == (200, "")
    await edge.drain_work()  # the official account's first message from an openid: a lookup
    texts = sorted((m.account, m.text) for m in edge.publisher.messages)
    assert texts == [("wx2c2769f8efd9abc2", "abcdteT"), ("wx5823bf96d3bd56c7-218", "hello")]
    wecom = next(m for m in edge.publisher.messages if m.account.endswith("-218"))
    assert wecom.sender.identities[0].value == "wx5823bf96d3bd56c7:mycreate"
