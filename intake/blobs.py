"""Content-addressed blob store: attachments and raw payloads, named by their sha256.

Every put is durable before it returns, and puts are group-committed: while one batch is
being made durable the next ones queue, and the whole queue is written by the next commit.
Small blobs (raw form bodies, chat texts, most images) go into one SQLite pack file, so a
batch costs one WAL fsync instead of a file, a rename and an fsync each: on this machine
that is 0.05 ms of CPU per blob instead of 0.3 ms. Larger blobs are files of their own.

The store names what it stores: the digest is computed on the writer thread (hashlib releases
the GIL), once, and a reference a caller passes is checked against it, never trusted. A blob
too large to hold in memory (a call recording, a 40 MiB mail) is written with `put_stream`,
chunk by chunk, hashed as it is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import sqlite3
import uuid
from collections.abc import AsyncIterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .blobs_s3 import S3BlobStore
    from .settings import IntakeSettings

_REF = re.compile(r"^sha256:([0-9a-f]{64})$")
PACK_NAME = "pack.sqlite3"
PACK_MAX_BYTES = 256 * 1024  # larger blobs are files: a pack keeps small rows cheap
BATCH_MAX = 256
GATHER_S = 0.003  # a commit waits this long for more puts (under load a confirm takes longer)
STREAM_BUFFER = 1024 * 1024  # a stream's chunks go to its thread in pieces of about this size
INCOMING = "incoming"  # streams being written, under the root (same file system: rename)


@dataclass(frozen=True)
class StoredBlob:
    """What `put_stream` stored: its reference, size and sha256 (for an Attachment)."""

    ref: str
    size: int

    @property
    def sha256(self) -> str:
        return digest_of(self.ref)


class BlobTooLarge(ValueError):
    """A stream went over the `max_bytes` its caller allowed; nothing was stored."""


class BlobStore(Protocol):
    async def put(self, data: bytes, ref: str | None = None) -> str: ...
    async def put_stream(self, chunks: AsyncIterable[bytes], *,
                         max_bytes: int | None = None) -> StoredBlob: ...
    async def get(self, ref: str) -> bytes: ...
    async def exists(self, ref: str) -> bool: ...


def blob_store_for(settings: IntakeSettings) -> FileBlobStore | S3BlobStore:
    """The backend `INTAKE_BLOB_URL` names (`s3://…`), or the file store under the data dir."""
    if settings.blob_url:
        from .blobs_s3 import S3BlobStore

        return S3BlobStore.from_url(settings.blob_url)
    return FileBlobStore(settings.data_dir / "blobs")


def blob_ref(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def digest_of(ref: str) -> str:
    match = _REF.match(ref)
    if not match:
        # Refuse anything but our own names: the reference never becomes a path otherwise.
        raise ValueError(f"not a blob reference: {ref!r}")
    return match.group(1)


class FileBlobStore:
    """Blobs under `<root>`: small ones in `pack.sqlite3`, the rest as `<aa>/<bb>/<sha256>`.

    Several processes may share a root: SQLite serialises their commits (WAL, busy timeout)
    and files are written under a per-process temporary name, then renamed.
    """

    def __init__(self, root: Path, *, pack_max_bytes: int = PACK_MAX_BYTES,
                 gather_s: float = GATHER_S) -> None:
        self.root = root
        self.pack_max_bytes = pack_max_bytes
        self.gather_s = gather_s
        # One thread owns the SQLite connection; it also serialises the commits.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="blobs")
        # Streams write and hash on threads of their own, so a 200 MiB recording never holds
        # up the commits of small puts.
        self._streams = ThreadPoolExecutor(2, thread_name_prefix="blob-streams")
        self._db: sqlite3.Connection | None = None
        self._pending: list[_Put] = []
        self._flusher: asyncio.Task[None] | None = None
        self.commits = 0  # batches made durable (tests and metrics read it)

    def _path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:4] / digest

    # -- the writer thread -----------------------------------------------------------------

    def _pack(self) -> sqlite3.Connection:
        if self._db is None:
            self._make_dirs(self.root)
            db = sqlite3.connect(self.root / PACK_NAME, isolation_level=None,
                                 check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
            db.execute("CREATE TABLE IF NOT EXISTS blobs ("
                       "digest TEXT PRIMARY KEY, data BLOB NOT NULL)")
            self._db = db
        return self._db

    def _write_file(self, digest: str, data: bytes) -> None:
        path = self._path(digest)
        if path.exists():
            return
        self._make_dirs(path.parent)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself must survive a crash

    def _make_dirs(self, directory: Path) -> None:
        """Create `directory` and its missing parents, each new entry made durable.

        A file fsynced in a directory whose own entry is not on disk can vanish with it after
        a crash: each directory this creates is fsynced in its parent.
        """
        missing: list[Path] = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for new in reversed(missing):
            with contextlib.suppress(FileExistsError):  # another process made it meanwhile
                new.mkdir()
            _fsync_dir(new.parent)

    def _write_batch(self, batch: list[_Put]) -> None:
        """Name each put by its content, refuse one whose caller named it otherwise, commit."""
        for put in batch:
            put.digest = hashlib.sha256(put.data).hexdigest()
            if put.expected is not None and put.expected != put.digest:
                put.error = ValueError(f"put() was given sha256:{put.expected} for content "
                                       f"that is sha256:{put.digest}")
        good = [put for put in batch if put.error is None]
        small = [(put.digest, put.data) for put in good if len(put.data) <= self.pack_max_bytes]
        for put in good:
            if len(put.data) > self.pack_max_bytes:
                self._write_file(put.digest, put.data)
        if small:
            db = self._pack()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR IGNORE INTO blobs (digest, data) VALUES (?, ?)", small)
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        self.commits += 1

    def _read(self, digest: str) -> bytes | None:
        path = self._path(digest)
        if path.exists():
            return path.read_bytes()
        row = self._select("SELECT data FROM blobs WHERE digest = ?", digest)
        if row is None:
            return None
        data = row[0]
        assert isinstance(data, bytes)  # a BLOB column reads back as bytes
        return data

    def _contains(self, digest: str) -> bool:
        return self._path(digest).exists() or self._select(
            "SELECT 1 FROM blobs WHERE digest = ?", digest) is not None

    def _select(self, query: str, digest: str) -> tuple[object, ...] | None:
        if self._db is None and not (self.root / PACK_NAME).exists():
            return None
        row: tuple[object, ...] | None = self._pack().execute(query, (digest,)).fetchone()
        return row

    # -- the event loop side ---------------------------------------------------------------

    async def put(self, data: bytes, ref: str | None = None) -> str:
        """Store `data` durably (once per content) and return its reference.

        The digest is computed on the writer thread; `ref`, if given, is checked against it
        (ValueError when they differ). Hashing on the event loop first would hash twice.
        """
        expected = digest_of(ref) if ref is not None else None
        put = _Put(data, expected, asyncio.get_running_loop().create_future())
        self._pending.append(put)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="blob-commit")
        # Shielded: a caller that gives up does not cancel the commit the others wait for.
        await asyncio.shield(put.done)
        return f"sha256:{put.digest}"

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            if self.gather_s and len(self._pending) < BATCH_MAX:
                # Several requests' blobs arrive within a few milliseconds under load: waiting
                # for company shares one commit (a thread hop and an fsync) among more puts.
                await asyncio.sleep(self.gather_s)
            batch, self._pending = self._pending[:BATCH_MAX], self._pending[BATCH_MAX:]
            try:
                await loop.run_in_executor(self._thread, self._write_batch, batch)
            except BaseException as exc:  # every waiter of the batch learns of it
                for put in batch:
                    if not put.done.done():
                        # OSError for every storage failure: callers answer "retry later".
                        put.done.set_exception(exc if isinstance(exc, OSError)
                                               else OSError(f"blob store: {exc}"))
                if not isinstance(exc, Exception):
                    raise
                continue
            for put in batch:
                if put.done.done():
                    continue
                if put.error is not None:
                    put.done.set_exception(put.error)
                else:
                    put.done.set_result(None)

    async def put_stream(self, chunks: AsyncIterable[bytes], *,
                         max_bytes: int | None = None) -> StoredBlob:
        """Store a blob from its chunks without holding it whole; durable when it returns.

        Chunks are gathered into pieces of about a MiB and each piece is written and hashed on
        a stream thread. A blob small enough for the pack goes there; a larger one is renamed
        into place. Over `max_bytes`, nothing is kept and `BlobTooLarge` is raised.
        """
        loop = asyncio.get_running_loop()
        incoming = self.root / INCOMING
        writer = await loop.run_in_executor(self._streams, self._open_incoming, incoming)
        size = 0
        try:
            piece: list[bytes] = []
            pending = 0
            async for chunk in chunks:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise BlobTooLarge(f"the blob is over {max_bytes} bytes")
                piece.append(chunk)
                pending += len(chunk)
                if pending >= STREAM_BUFFER:
                    await loop.run_in_executor(self._streams, writer.write, b"".join(piece))
                    piece, pending = [], 0
            if piece:
                await loop.run_in_executor(self._streams, writer.write, b"".join(piece))
            digest = await loop.run_in_executor(self._streams, writer.finish)
        except BaseException:
            await loop.run_in_executor(self._streams, writer.discard)
            raise
        if size <= self.pack_max_bytes:
            data = await loop.run_in_executor(self._streams, writer.read_and_discard)
            await self.put(data, f"sha256:{digest}")
        else:
            await loop.run_in_executor(self._thread, self._adopt, writer, digest)
        return StoredBlob(f"sha256:{digest}", size)

    def _open_incoming(self, incoming: Path) -> _Incoming:
        self._make_dirs(incoming)
        return _Incoming(incoming / f"{uuid.uuid4().hex}.part")

    def _adopt(self, writer: _Incoming, digest: str) -> None:
        """Move a finished stream into its place (or drop it: the content is there)."""
        path = self._path(digest)
        if path.exists():
            writer.discard()
            return
        self._make_dirs(path.parent)
        os.replace(writer.path, path)
        _fsync_dir(path.parent)

    async def get(self, ref: str) -> bytes:
        digest = digest_of(ref)
        data = await asyncio.get_running_loop().run_in_executor(self._thread, self._read,
                                                                digest)
        if data is None:
            raise FileNotFoundError(f"no blob {ref}")
        return data

    async def exists(self, ref: str) -> bool:
        digest = digest_of(ref)
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._contains,
                                                                digest)

    async def close(self) -> None:
        """Finish the commits under way, then release the pack and the thread."""
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close_db)
        self._thread.shutdown(wait=False)
        self._streams.shutdown(wait=False)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


@dataclass
class _Put:
    """One `put` waiting for its commit; the writer thread fills in `digest` (or `error`)."""

    data: bytes
    expected: str | None
    done: asyncio.Future[None]
    digest: str = ""
    error: Exception | None = None


class _Incoming:
    """A stream's temporary file, written and hashed on a stream thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hash = hashlib.sha256()
        self.handle: IO[bytes] | None = open(path, "wb")  # closed by finish or discard

    def write(self, piece: bytes) -> None:
        assert self.handle is not None
        self.handle.write(piece)
        self.hash.update(piece)  # releases the GIL for large pieces

    def finish(self) -> str:
        assert self.handle is not None
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        self.handle = None
        return self.hash.hexdigest()

    def read_and_discard(self) -> bytes:
        data = self.path.read_bytes()
        self.discard()
        return data

    def discard(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _fsync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
