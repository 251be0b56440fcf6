"""Content-addressed blob store: attachments and raw payloads, named by their sha256."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from pathlib import Path
from typing import Protocol

_REF = re.compile(r"^sha256:([0-9a-f]{64})$")


class BlobStore(Protocol):
    async def put(self, data: bytes) -> str: ...
    async def get(self, ref: str) -> bytes: ...
    async def exists(self, ref: str) -> bool: ...


def blob_ref(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def digest_of(ref: str) -> str:
    match = _REF.match(ref)
    if not match:
        # Refuse anything but our own names: the reference never becomes a path otherwise.
        raise ValueError(f"not a blob reference: {ref!r}")
    return match.group(1)


class FileBlobStore:
    """Blobs under `<root>/<aa>/<bb>/<sha256>`, written atomically and fsynced."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:4] / digest

    def _put(self, data: bytes) -> str:
        ref = blob_ref(data)
        path = self._path(digest_of(ref))
        if path.exists():
            return ref
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return ref

    async def put(self, data: bytes) -> str:
        return await asyncio.to_thread(self._put, data)

    async def get(self, ref: str) -> bytes:
        return await asyncio.to_thread(self._path(digest_of(ref)).read_bytes)

    async def exists(self, ref: str) -> bool:
        return self._path(digest_of(ref)).exists()
