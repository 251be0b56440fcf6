"""A WeChat-server simulator for the tests: callbacks signed and encrypted by wechatpy.

Never the connector's own code: the signature is WeChat's documented sha1, the encryption
wechatpy's `WeChatCrypto` (official accounts) and `wechatpy.enterprise.crypto.WeChatCrypto`
(WeCom), so a bug in the connector's verification cannot hide behind a matching bug here.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wechatpy.crypto import WeChatCrypto
from wechatpy.enterprise.crypto import WeChatCrypto as WecomCrypto

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "intake.example.yaml"

SAFE = {"id": "wx2c2769f8efd9abc2", "mode": "safe", "token": "spamtest",
        "key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "app_id": "wx2c2769f8efd9abc2",
        "original_id": "gh_10f6c3c3ac5a"}
PLAIN = {"id": "wx1111111111111111", "mode": "plain", "token": "intakeplain2026", "key": None,
         "app_id": "wx1111111111111111", "original_id": "gh_1111111111aa"}
COMPAT = {"id": "wx2222222222222222", "mode": "compatible", "token": "intakecompat2026",
          "key": "KG4RWBLsuPpYdj0khqDSXvVKnIjuf7obnxsl8UHi0Jg", "app_id": "wx2222222222222222",
          "original_id": "gh_2222222222bb"}
WECOM = {"id": "wx5823bf96d3bd56c7-218", "mode": "wecom", "token": "QDG6eK",
         "key": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "app_id": "wx5823bf96d3bd56c7",
         "original_id": "wx5823bf96d3bd56c7"}
ACCOUNTS = {a["id"]: a for a in (SAFE, PLAIN, COMPAT, WECOM)}


def sha1_signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, str]
    body: bytes


def _crypto(account: dict[str, Any]) -> Any:
    if account["mode"] == "wecom":
        return WecomCrypto(account["token"], account["key"], account["app_id"])
    return WeChatCrypto(account["token"], account["key"], account["app_id"])


def callback(account: dict[str, Any], xml: str, *, timestamp: str | None = None,
             nonce: str | None = None) -> Request:
    """The POST WeChat's servers would make for `xml` (the plaintext message)."""
    timestamp = timestamp or str(int(time.time()))
    nonce = nonce or str(secrets.randbelow(10**10))
    path = f"/wechat/{account['id']}"
    if account["mode"] == "plain":
        return Request(path, {"signature": sha1_signature(account["token"], timestamp, nonce),
                              "timestamp": timestamp, "nonce": nonce}, xml.encode())
    envelope = _crypto(account).encrypt_message(xml, nonce, timestamp)
    encrypt = re.search(r"<Encrypt><!\[CDATA\[(.*?)\]\]></Encrypt>", envelope).group(1)  # type: ignore[union-attr]
    msg_signature = sha1_signature(account["token"], timestamp, nonce, encrypt)
    to_user = f"<ToUserName><![CDATA[{account['original_id']}]]></ToUserName>"
    if account["mode"] == "wecom":
        body = (f"<xml>{to_user}<AgentID><![CDATA[218]]></AgentID>"
                f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>")
        return Request(path, {"msg_signature": msg_signature, "timestamp": timestamp,
                              "nonce": nonce}, body.encode())
    if account["mode"] == "compatible":  # the plaintext fields ride along, unsigned
        body = xml.replace("</xml>", f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>")
    else:
        body = f"<xml>{to_user}<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    return Request(path, {"signature": sha1_signature(account["token"], timestamp, nonce),
                          "timestamp": timestamp, "nonce": nonce, "encrypt_type": "aes",
                          "msg_signature": msg_signature}, body.encode())


def url_check(account: dict[str, Any], echostr: str = "hello", *,
              timestamp: str | None = None, nonce: str = "1372623149") -> Request:
    timestamp = timestamp or str(int(time.time()))
    path = f"/wechat/{account['id']}"
    if account["mode"] != "wecom":
        return Request(path, {"signature": sha1_signature(account["token"], timestamp, nonce),
                              "timestamp": timestamp, "nonce": nonce, "echostr": echostr}, b"")
    envelope = _crypto(account).encrypt_message(echostr, nonce, timestamp)
    encrypted = re.search(r"<Encrypt><!\[CDATA\[(.*?)\]\]></Encrypt>", envelope).group(1)  # type: ignore[union-attr]
    return Request(path, {"msg_signature": sha1_signature(account["token"], timestamp, nonce,
                                                          encrypted),
                          "timestamp": timestamp, "nonce": nonce, "echostr": encrypted}, b"")


def text_xml(account: dict[str, Any], content: str, *, sender: str = "oDemoOpenid000000000000000",
             msg_id: str = "1234567890123456", create_time: int | None = None) -> str:
    return (f"<xml><ToUserName><![CDATA[{account['original_id']}]]></ToUserName>"
            f"<FromUserName><![CDATA[{sender}]]></FromUserName>"
            f"<CreateTime>{create_time or int(time.time())}</CreateTime>"
            f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>"
            f"<MsgId>{msg_id}</MsgId></xml>")


def account_of_fixture(name: str) -> dict[str, Any]:
    """Fixtures are plaintext: `*_aes` goes to the safe account, `*_compat` to the compatible
    one, `wecom_*` to the WeCom app, the rest to the plain account."""
    stem = name.split(".", 1)[0]
    if stem.startswith("wecom_"):
        return WECOM
    if stem.endswith("_aes"):
        return SAFE
    if stem.endswith("_compat"):
        return COMPAT
    return PLAIN
