"""The content-addressed blob store on the filesystem."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from intake.blobs import FileBlobStore


async def test_blobs_are_named_by_their_sha256_and_read_back(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    data = "发票.pdf contents".encode()
    ref = await store.put(data)
    assert ref == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert await store.get(ref) == data
    assert await store.exists(ref)
    digest = ref.split(":")[1]
    assert (tmp_path / digest[:2] / digest[2:4] / digest).read_bytes() == data


async def test_the_same_bytes_are_stored_once(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    assert await store.put(b"x") == await store.put(b"x")
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == 1


@pytest.mark.parametrize("ref", ["../../etc/passwd", "sha256:../../x", "sha256:" + "A" * 64,
                                 "sha256:" + "0" * 63 + "\0", "md5:abc"])
async def test_references_that_are_not_ours_never_become_paths(tmp_path: Path, ref: str) -> None:
    store = FileBlobStore(tmp_path)
    with pytest.raises(ValueError, match="not a blob reference"):
        await store.get(ref)
    with pytest.raises(ValueError):
        await store.exists(ref)
