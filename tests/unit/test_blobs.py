"""The content-addressed blob store: a SQLite pack for small blobs, files for large ones."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from intake.blobs import PACK_NAME, FileBlobStore


async def test_blobs_are_named_by_their_sha256_and_read_back(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    data = "发票.pdf contents".encode()
    ref = await store.put(data)
    assert ref == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert await store.get(ref) == data
    assert await store.exists(ref)
    assert not await store.exists("sha256:" + "0" * 64)
    await store.close()


async def test_a_put_is_committed_before_it_returns(tmp_path: Path) -> None:
    """What put returned is in the pack for any other reader (another process, after a crash)."""
    store = FileBlobStore(tmp_path)
    ref = await store.put(b"raw form body")
    with sqlite3.connect(tmp_path / PACK_NAME) as other:
        (data,) = other.execute("SELECT data FROM blobs WHERE digest = ?",
                                (ref.split(":")[1],)).fetchone()
    assert data == b"raw form body"
    await store.close()


async def test_large_blobs_are_files_of_their_own(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path, pack_max_bytes=1024)
    data = b"%PDF" + b"x" * 4096
    ref = await store.put(data)
    digest = ref.split(":")[1]
    assert (tmp_path / digest[:2] / digest[2:4] / digest).read_bytes() == data
    assert await store.get(ref) == data
    assert await store.exists(ref)
    await store.close()


async def test_concurrent_puts_share_commits(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    blobs = [f"submission {i}".encode() for i in range(200)]
    refs = await asyncio.gather(*(store.put(b) for b in blobs))
    assert 1 <= store.commits < 20  # group commit: not one per blob
    fresh = FileBlobStore(tmp_path)
    assert [await fresh.get(r) for r in refs] == blobs
    await asyncio.gather(store.close(), fresh.close())


async def test_the_same_bytes_are_stored_once(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    first, second, third = await asyncio.gather(store.put(b"x"), store.put(b"x"), store.put(b"x"))
    assert first == second == third == await store.put(b"x")
    with sqlite3.connect(tmp_path / PACK_NAME) as other:
        assert other.execute("SELECT count(*) FROM blobs").fetchone() == (1,)
    await store.close()


async def test_a_storage_failure_is_an_oserror_for_every_waiter(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    store = FileBlobStore(blocker / "blobs")
    results = await asyncio.gather(store.put(b"a"), store.put(b"b"), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    await store.close()


async def test_a_missing_blob_is_file_not_found(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    await store.put(b"something")
    with pytest.raises(FileNotFoundError):
        await store.get("sha256:" + "1" * 64)
    await store.close()


@pytest.mark.parametrize("ref", ["../../etc/passwd", "sha256:../../x", "sha256:" + "A" * 64,
                                 "sha256:" + "0" * 63 + "\0", "md5:abc"])
async def test_references_that_are_not_ours_never_become_paths(tmp_path: Path, ref: str) -> None:
    store = FileBlobStore(tmp_path)
    with pytest.raises(ValueError, match="not a blob reference"):
        await store.get(ref)
    with pytest.raises(ValueError):
        await store.exists(ref)


async def test_puts_within_the_gather_window_share_one_commit(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path, gather_s=0.05)

    async def later(delay: float, data: bytes) -> str:
        await asyncio.sleep(delay)
        return await store.put(data)

    await asyncio.gather(later(0, b"first"), later(0.01, b"second"), later(0.02, b"third"))
    assert store.commits == 1
    await store.close()


async def test_a_reference_the_caller_computed_is_used_as_given(tmp_path: Path) -> None:
    from intake.blobs import blob_ref
    from intake.testing import MemoryBlobStore

    store = FileBlobStore(tmp_path)
    data = b"an upload hashed once by the connector"
    assert await store.put(data, blob_ref(data)) == blob_ref(data)
    assert await store.get(blob_ref(data)) == data
    with pytest.raises(ValueError, match="not a blob reference"):
        await store.put(data, "../../etc/passwd")  # never becomes a path
    await store.close()
    # The contract suite's in-memory store catches a connector that names content wrongly.
    with pytest.raises(ValueError, match="was given"):
        await MemoryBlobStore().put(data, blob_ref(b"something else"))


async def test_a_reference_that_does_not_match_the_content_is_refused(tmp_path: Path) -> None:
    """The store hashes what it writes; a caller's wrong name for content is an error."""
    from intake.blobs import blob_ref

    store = FileBlobStore(tmp_path)
    wrong = blob_ref(b"other content")
    results = await asyncio.gather(store.put(b"mine", wrong), store.put(b"fine"),
                                   return_exceptions=True)
    assert isinstance(results[0], ValueError) and results[1] == blob_ref(b"fine")
    assert not await store.exists(wrong) and not await store.exists(blob_ref(b"mine"))
    await store.close()


async def _chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        yield bytes([sent // size % 251]) * piece
        sent += piece


async def test_a_large_stream_is_stored_without_being_held_in_memory(tmp_path: Path) -> None:
    import tracemalloc

    total = 48 * 1024 * 1024
    expected = hashlib.sha256()
    async for chunk in _chunks(total):
        expected.update(chunk)
    store = FileBlobStore(tmp_path)
    tracemalloc.start()
    try:
        stored = await store.put_stream(_chunks(total))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stored.ref == f"sha256:{expected.hexdigest()}" and stored.size == total
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes for a {total}-byte stream"
    path = tmp_path / stored.sha256[:2] / stored.sha256[2:4] / stored.sha256
    assert path.stat().st_size == total
    assert list((tmp_path / "incoming").iterdir()) == []
    await store.close()


async def test_a_small_stream_goes_to_the_pack_and_reads_back(tmp_path: Path) -> None:
    from intake.blobs import blob_ref

    store = FileBlobStore(tmp_path)

    async def parts() -> AsyncIterator[bytes]:
        for part in (b"hello ", b"stream"):
            yield part

    stored = await store.put_stream(parts())
    assert stored.ref == blob_ref(b"hello stream") and stored.size == 12
    assert await store.get(stored.ref) == b"hello stream"
    assert not (tmp_path / stored.sha256[:2]).exists()  # in the pack, not a file
    await store.close()


async def test_a_stream_over_its_limit_stores_nothing(tmp_path: Path) -> None:
    from intake.blobs import BlobTooLarge

    store = FileBlobStore(tmp_path)
    with pytest.raises(BlobTooLarge):
        await store.put_stream(_chunks(3 * 1024 * 1024), max_bytes=2 * 1024 * 1024)
    assert list((tmp_path / "incoming").iterdir()) == []
    assert not any(p.is_dir() and p.name != "incoming" for p in tmp_path.iterdir())
    await store.close()


async def test_the_same_stream_twice_is_one_file(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    first = await store.put_stream(_chunks(1024 * 1024))
    second = await store.put_stream(_chunks(1024 * 1024))
    assert first == second
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent.name != "incoming"
             and not p.name.startswith("pack")]
    assert len(files) == 1
    await store.close()


async def test_new_directories_are_made_durable_in_their_parents(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import intake.blobs as blobs

    synced: list[Path] = []
    real = blobs._fsync_dir
    monkeypatch.setattr(blobs, "_fsync_dir", lambda d: (synced.append(d), real(d)))
    store = FileBlobStore(tmp_path / "root", pack_max_bytes=0)
    ref = await store.put(b"a file of its own")
    digest = ref.split(":")[1]
    leaf = tmp_path / "root" / digest[:2] / digest[2:4]
    # Each new directory's entry in its parent, and the file's entry in the leaf.
    assert {tmp_path, tmp_path / "root", leaf.parent, leaf} <= set(synced)
    await store.close()
