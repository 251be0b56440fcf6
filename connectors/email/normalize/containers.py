"""Mail wrapped in another format: opaque S/MIME (`signed-data`) and Outlook's TNEF.

Both hide the customer's words inside a binary structure that no MIME walk sees: an opaque
S/MIME mail is one `smime.p7m` part whose PKCS #7 `SignedData` carries the real MIME body, and
an Outlook `winmail.dat` carries files and a body (plain, HTML or compressed RTF). Reading them
here keeps `mime.py` a MIME walk. No signature is verified and nothing is decrypted (out of
scope): a signed mail is read as written and flagged `signed`.
"""

from __future__ import annotations

from asn1crypto import cms  # type: ignore[import-untyped]

SMIME_TYPES = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})


class SignedDataUnreadable(Exception):
    """An opaque S/MIME part whose signed content could not be read; the mail is still kept."""


def signed_content(blob: bytes) -> bytes | None:
    """The content a PKCS #7 / CMS `SignedData` carries (DER or BER, chunked octet strings
    included); None when the blob is another kind (`enveloped-data`: encrypted).

    Raises `SignedDataUnreadable` with a short reason for a blob that is not PKCS #7 at all,
    is cut short, or signs nothing (a detached signature sent as if opaque).
    """
    try:
        info = cms.ContentInfo.load(blob)
        kind = info["content_type"].native
        if kind != "signed_data":
            return None
        content = info["content"]["encap_content_info"]["content"].native
    except SignedDataUnreadable:
        raise
    except Exception as exc:  # asn1crypto raises ValueError, TypeError, KeyError on damage
        raise SignedDataUnreadable("the PKCS #7 structure is damaged or cut short") from exc
    if content is None:
        raise SignedDataUnreadable("the PKCS #7 structure carries no signed content")
    if not isinstance(content, bytes):
        raise SignedDataUnreadable("the signed content is not a byte string")
    return content
