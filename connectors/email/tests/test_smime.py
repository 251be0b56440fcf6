"""Opaque S/MIME (`application/pkcs7-mime; smime-type=signed-data`): the signed MIME body is
read out of the PKCS #7 structure, so its text and attachments come out; nothing is verified.

The blobs are made here, signed with a throwaway key: by the `cryptography` package (DER) and
by `openssl smime -sign -nodetach -stream` (BER with indefinite lengths and a chunked octet
string, as streaming mailers write it).
"""

from __future__ import annotations

import base64
import datetime
import shutil
import subprocess
import zlib
from datetime import UTC
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.email.normalize import Envelope, MailPolicy, containers, to_message
from intake import Message

POLICY = MailPolicy(account="support@shop.example", address="support@shop.example",
                    domain="shop.example", our_addresses=frozenset({"support@shop.example"}),
                    our_domains=frozenset({"shop.example"}), forwarders=frozenset(),
                    tag_patterns=(r"\[#(?P<number>\d{1,12})\]",), auto_reply_subjects=())
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 4 + b"%%EOF\n"
SIGNED_BODY = (
    "Content-Type: multipart/mixed; boundary=\"inner\"\r\n\r\n"
    "--inner\r\nContent-Type: text/plain; charset=gb2312\r\nContent-Transfer-Encoding: base64"
    "\r\n\r\n" + base64.b64encode("您好，账单见附件。堃".encode("gb18030")).decode() + "\r\n"
    "--inner\r\nContent-Type: application/pdf; name=\"statement.pdf\"\r\n"
    "Content-Disposition: attachment; filename=\"statement.pdf\"\r\n"
    "Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(PDF).decode().replace(
        "\n", "\r\n") + "--inner--\r\n").encode()


def certificate(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.EMAIL_ADDRESS, "notice@bank.example")])
    now = datetime.datetime.now(UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))


def signed_der(content: bytes) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return (pkcs7.PKCS7SignatureBuilder().set_data(content)
            .add_signer(certificate(key), key, hashes.SHA256())
            .sign(serialization.Encoding.DER, []))


def opaque_mail(blob: bytes, smime_type: str | None = "signed-data",
                kind: str = "application/pkcs7-mime") -> bytes:
    parameter = f"; smime-type={smime_type}" if smime_type else ""
    encoded = base64.encodebytes(blob).decode().replace("\n", "\r\n")
    return ("From: Bank <notice@bank.example>\r\nTo: support@shop.example\r\n"
            "Subject: statement\r\nMessage-ID: <smime@bank.example>\r\n"
            "Date: Thu, 03 Dec 2026 09:15:00 +0800\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: {kind}{parameter}; name=\"smime.p7m\"\r\n"
            "Content-Disposition: attachment; filename=\"smime.p7m\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n" + encoded).encode()


def read(raw: bytes) -> Message:
    return to_message(raw, Envelope(mail_from="notice@bank.example"), POLICY,
                      datetime.datetime.now(UTC)).message


def test_opaque_signed_data_gives_the_signed_text_and_attachments() -> None:
    blob = signed_der(SIGNED_BODY)
    message = read(opaque_mail(blob))
    assert message.text == "您好，账单见附件。堃"
    assert [(a.filename, a.content_type, a.size) for a in message.attachments] == [
        ("smime.p7m", "application/pkcs7-mime", len(blob)),
        ("statement.pdf", "application/pdf", len(PDF))]
    assert message.flags == ["signed"]
    assert "parse_error" not in message.channel_data


def test_a_plain_text_signed_body_without_smime_type_is_read_too() -> None:
    content = b"Content-Type: text/plain; charset=utf-8\r\n\r\nPlease call me back.\r\n"
    message = read(opaque_mail(signed_der(content), smime_type=None,
                               kind="application/x-pkcs7-mime"))
    assert message.text == "Please call me back."
    assert message.flags == ["signed"]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_openssl_streamed_ber_signed_data_is_read(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (tmp_path / "cert.pem").write_bytes(certificate(key).public_bytes(
        serialization.Encoding.PEM))
    (tmp_path / "content.eml").write_bytes(SIGNED_BODY)
    signed = subprocess.run(
        ["openssl", "smime", "-sign", "-nodetach", "-stream", "-binary",
         "-in", str(tmp_path / "content.eml"), "-signer", str(tmp_path / "cert.pem"),
         "-inkey", str(tmp_path / "key.pem"), "-outform", "SMIME"],
        check=True, capture_output=True).stdout
    assert b"smime-type=signed-data" in signed
    raw = (b"From: Bank <notice@bank.example>\r\nTo: support@shop.example\r\n"
           b"Subject: statement\r\nMessage-ID: <smime-ber@bank.example>\r\n"
           + signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    message = read(raw)
    assert message.text == "您好，账单见附件。堃"
    assert [a.filename for a in message.attachments] == ["smime.p7m", "statement.pdf"]
    assert message.flags == ["signed"]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "detached"])
def test_a_broken_blob_keeps_the_mail_flagged_with_its_reason(damage: str) -> None:
    blob = signed_der(SIGNED_BODY)
    if damage == "truncated":
        blob = blob[: len(blob) // 2]
    elif damage == "garbage":
        blob = b"\x30\x82\x01\x00 opaque signed data, not really"
    else:  # a detached signature sent as if it were opaque: it signs nothing it carries
        key = ec.generate_private_key(ec.SECP256R1())
        blob = (pkcs7.PKCS7SignatureBuilder().set_data(SIGNED_BODY)
                .add_signer(certificate(key), key, hashes.SHA256())
                .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature]))
    message = read(opaque_mail(blob))
    assert message.flags == ["signed", "parse_error"]
    reason = message.channel_data["parse_error"]
    assert reason.startswith("smime_unreadable: "), reason
    assert "could not be decoded" in message.text and reason in message.text
    assert [(a.filename, a.size) for a in message.attachments] == [("smime.p7m", len(blob))]


def test_enveloped_data_is_encrypted_and_kept_not_read() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    blob = (pkcs7.PKCS7EnvelopeBuilder().set_data(b"Content-Type: text/plain\r\n\r\nsecret\r\n")
            .add_recipient(certificate(key)).encrypt(serialization.Encoding.DER, []))
    for smime_type in ("enveloped-data", None):
        message = read(opaque_mail(blob, smime_type=smime_type))
        assert message.flags == ["encrypted"]
        assert "secret" not in message.text
        assert [a.filename for a in message.attachments] == ["smime.p7m"]


def test_a_signed_mail_inside_a_signed_mail_is_read_to_the_end() -> None:
    inner = opaque_mail(signed_der(SIGNED_BODY)).split(b"MIME-Version: 1.0\r\n", 1)[1]
    message = read(opaque_mail(signed_der(inner)))
    assert message.text == "您好，账单见附件。堃"
    assert [a.filename for a in message.attachments] == [
        "smime.p7m", "smime.p7m", "statement.pdf"]


def compressed(content: bytes) -> bytes:
    """RFC 3274 `CompressedData` (zlib), built with asn1crypto as AS2 and S/MIME agents send it."""
    from asn1crypto import cms  # type: ignore[import-untyped]

    return cms.ContentInfo({"content_type": "compressed_data", "content": cms.CompressedData({
        "version": "v0", "compression_algorithm": {"algorithm": "zlib"},
        "encap_content_info": {"content_type": "data", "content": zlib.compress(content)}}),
    }).dump()


def test_compressed_data_is_inflated_and_read_and_a_signed_mail_inside_keeps_signed() -> None:
    message = read(opaque_mail(compressed(SIGNED_BODY), smime_type="compressed-data"))
    assert message.text == "您好，账单见附件。堃"
    assert [a.filename for a in message.attachments] == ["smime.p7m", "statement.pdf"]
    assert message.flags == []
    signed_inside = opaque_mail(signed_der(SIGNED_BODY)).split(b"MIME-Version: 1.0\r\n", 1)[1]
    message = read(opaque_mail(compressed(signed_inside), smime_type="compressed-data"))
    assert message.text == "您好，账单见附件。堃"
    assert message.flags == ["signed"]


def test_compressed_data_that_inflates_too_far_is_kept_flagged_not_inflated(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "MAX_OPAQUE_BYTES", 100_000)
    blob = compressed(b"Content-Type: text/plain\r\n\r\n" + b"A" * 1_000_000)
    message = read(opaque_mail(blob, smime_type="compressed-data"))
    assert message.flags == ["parse_error"]
    assert message.channel_data["parse_error"] == (
        "smime_unreadable: the compressed content inflates past 100000 bytes")
    assert [(a.filename, a.size) for a in message.attachments] == [("smime.p7m", len(blob))]


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255),
       cut=st.integers(min_value=0))
def test_a_damaged_real_blob_is_read_or_refused_with_a_reason_never_raises_else(
        position: int, value: int, cut: int) -> None:
    blob = bytearray(DAMAGE_SEED)
    blob[position % len(blob)] = value
    damaged = bytes(blob[: len(blob) - cut % len(blob)])
    try:
        kind, content = containers.opaque_content(damaged)
    except containers.SmimeUnreadable as exc:
        assert str(exc)
        return
    assert kind in ("signed", "compressed", "other")
    assert content is None or isinstance(content, bytes)


DAMAGE_SEED = signed_der(SIGNED_BODY)
