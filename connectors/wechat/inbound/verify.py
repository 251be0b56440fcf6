"""Proving a callback genuine: signatures, timestamps, AES decryption and safe XML parsing.

WeChat's 消息加解密说明: `signature` = sha1 of the sorted token, timestamp and nonce;
`msg_signature` adds the `Encrypt` element (or the encrypted `echostr`). The ciphertext is
AES-256-CBC with key = base64(EncodingAESKey + "="), IV = the key's first 16 bytes, PKCS#7 to
32 bytes; the plaintext is 16 random bytes, a 4-byte big-endian length, the XML, then the
AppID (WeCom: the CorpID). The AES itself is wechatpy's; the framing is checked here more
strictly than wechatpy does (it slices past the end of a short plaintext without complaint).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import xml.etree.ElementTree as ElementTree

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from wechatpy import parse_message
from wechatpy.crypto.cryptography import WeChatCipher
from wechatpy.enterprise import parse_message as parse_wecom_message
from wechatpy.events import BaseEvent

from ..errors import DecryptFailed, SignatureInvalid, TimestampStale, XmlInvalid

BLOCK = 16
PAD_TO = 32


def signature_of(*parts: str) -> str:
    """WeChat's signature: sha1 of the parts sorted and joined."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def check_signature(given: str | None, *parts: str) -> None:
    expected = signature_of(*parts)
    if not given or not hmac.compare_digest(given.lower().encode(), expected.encode()):
        raise SignatureInvalid("The signature does not match this account's token.")


def check_timestamp(timestamp: str | None, now: float, max_skew_s: int) -> int:
    try:
        value = int(timestamp or "")
    except ValueError:
        raise TimestampStale("The timestamp is not a number.") from None
    if abs(now - value) > max_skew_s:
        raise TimestampStale(f"The timestamp is more than {max_skew_s} s from now.")
    return value


def aes_key(encoding_aes_key: str) -> bytes:
    return base64.b64decode(encoding_aes_key + "=")


def decrypt(ciphertext: str, key: bytes, receiver_id: str) -> bytes:
    """The XML inside `ciphertext`; DecryptFailed for anything not a genuine ciphertext."""
    try:
        data = base64.b64decode(ciphertext, validate=True)
    except (binascii.Error, ValueError):
        raise DecryptFailed("The ciphertext is not base64.") from None
    if not data or len(data) % BLOCK:
        raise DecryptFailed("The ciphertext is not whole AES blocks.")
    try:
        plain: bytes = WeChatCipher(key).decrypt(data)
    except ValueError:
        raise DecryptFailed("The ciphertext does not decrypt.") from None
    pad = plain[-1]
    if not 1 <= pad <= PAD_TO or plain[-pad:] != bytes([pad]) * pad:
        raise DecryptFailed("The plaintext is badly padded.")
    content = plain[BLOCK:-pad]
    if len(content) < 4:
        raise DecryptFailed("The plaintext is too short.")
    (length,) = struct.unpack(">I", content[:4])
    if 4 + length > len(content):
        raise DecryptFailed("The plaintext's length runs past its end.")
    found_id = content[4 + length:]
    if not hmac.compare_digest(found_id, receiver_id.encode()):
        raise DecryptFailed("The ciphertext is for another AppID or CorpID.")
    return content[4:4 + length]


def parse_xml(body: bytes) -> dict[str, str]:
    """The `<xml>` root's children as a flat mapping (nested ones as `Parent.Child`).

    defusedxml refuses any DTD, entity or external reference before anything reads the XML;
    text keeps its exact content (CDATA sections joined, whitespace kept).
    """
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise XmlInvalid("The body is not valid UTF-8.") from None
    try:
        root = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise XmlInvalid(f"The XML has a DTD or entity ({type(exc).__name__}).") from None
    except (ElementTree.ParseError, ValueError) as exc:
        raise XmlInvalid(f"The body is not well-formed XML: {exc}") from None
    if root.tag != "xml":
        raise XmlInvalid("The root element is not <xml>.")
    fields: dict[str, str] = {}
    for child in root:
        if len(child):
            for grandchild in child.iter():
                if grandchild is not child and not len(grandchild):
                    fields.setdefault(f"{child.tag}.{grandchild.tag}", grandchild.text or "")
        else:
            fields[child.tag] = child.text or ""
    return fields


def require_message_fields(fields: dict[str, str]) -> None:
    if not fields.get("MsgType", "").strip():
        raise XmlInvalid("The XML has no MsgType.")
    if not fields.get("FromUserName", "").strip():
        raise XmlInvalid("The XML has no FromUserName.")


def event_name(xml: bytes, *, wecom: bool) -> str | None:
    """wechatpy's name for an event callback (None for a message or an unknown event).

    Only called on XML `parse_xml` accepted (defusedxml first: wechatpy's xmltodict must never
    see a DTD or an entity).
    """
    try:
        parsed = (parse_wecom_message if wecom else parse_message)(xml.decode("utf-8"))
    except (KeyError, ValueError, AttributeError, TypeError):
        return None
    name = getattr(parsed, "event", None) if isinstance(parsed, BaseEvent) else None
    return str(name) if name else None
