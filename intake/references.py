"""Quotable references (`WF-7K3M9Q2D`): short, unambiguous read aloud, stable for one key."""

from __future__ import annotations

import hashlib
import re

__all__ = ["reference_for", "reference_pattern"]

# Crockford's base32: no I, L, O or U, so a reference read over the phone is unambiguous.
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERENCE_CHARS = 8
_PREFIX = re.compile(r"^[A-Z]{1,8}$")


def reference_for(prefix: str, key: str) -> str:
    """`<prefix>-` and 8 Crockford base32 characters of the key's sha256.

    The same idempotency key always shows the same reference, so a retried submission quotes
    what the first one did. 40 bits: collisions are rare, and a reference is a hint for people,
    never a key (the idempotency key is).
    """
    if not _PREFIX.match(prefix):
        raise ValueError(f"a reference prefix is 1 to 8 capital letters, not {prefix!r}")
    number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:5], "big")
    chars = [CROCKFORD[(number >> shift) & 31] for shift in range(35, -1, -5)]
    return f"{prefix}-" + "".join(chars)


def reference_pattern(prefix: str) -> re.Pattern[str]:
    """What `reference_for(prefix, …)` produces, e.g. to find one quoted in a mail's text."""
    return re.compile(rf"^{re.escape(prefix)}-[0-9A-HJKMNP-TV-Z]{{{REFERENCE_CHARS}}}$")
