"""The blob store's behaviour on both backends: the file store and S3 (`INTAKE_BLOB_URL`).

S3 is a real S3-compatible HTTP server that the tests start: moto's server mode
(`moto_server`, from PyPI), spoken to over HTTP by aiobotocore as any S3 would be. What only
one backend has (the file store's pack and group commits) stays in tests/unit/test_blobs.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from intake.blobs import BlobTooLarge, FileBlobStore, blob_ref, blob_store_for
from intake.blobs_s3 import S3BlobStore
from intake.doctor import check_blobs
from intake.settings import IntakeSettings

BUCKET = "intake-test"
PART = 5 * 1024 * 1024  # S3's smallest part: streams of a few parts stay quick


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a port of its own, with test credentials in the environment."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="test-key", AWS_SECRET_ACCESS_KEY="test-secret",
                      AWS_REGION="us-east-1")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def make_bucket(endpoint: str, name: str) -> None:
    store = S3BlobStore(name, endpoint=endpoint)
    client = await store._s3()
    await client.create_bucket(Bucket=name)
    await store.close()


async def objects(store: S3BlobStore) -> list[str]:
    client = await store._s3()
    listed = await client.list_objects_v2(Bucket=store.bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


async def uploads(store: S3BlobStore) -> list[str]:
    client = await store._s3()
    listed = await client.list_multipart_uploads(Bucket=store.bucket)
    return [item["Key"] for item in listed.get("Uploads", [])]


@pytest.fixture(params=["file", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path
                ) -> AsyncIterator[FileBlobStore | S3BlobStore]:
    if request.param == "file":
        made: FileBlobStore | S3BlobStore = FileBlobStore(tmp_path)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = f"{BUCKET}-{os.urandom(4).hex()}"
        await make_bucket(endpoint, bucket)
        made = S3BlobStore.from_url(f"s3://{bucket}/attachments?endpoint={endpoint}")
        made.part_bytes = PART
    yield made
    await made.close()


async def _chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        yield bytes([sent // size % 251]) * piece
        sent += piece


async def test_blobs_are_named_by_their_sha256_and_read_back(store: FileBlobStore) -> None:
    data = "发票.pdf contents".encode()
    ref = await store.put(data)
    assert ref == f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert await store.get(ref) == data
    assert await store.exists(ref) and not await store.exists("sha256:" + "0" * 64)
    with pytest.raises(FileNotFoundError):
        await store.get("sha256:" + "1" * 64)


async def test_the_same_bytes_are_stored_once(store: FileBlobStore) -> None:
    refs = await asyncio.gather(store.put(b"x"), store.put(b"x"))
    assert refs[0] == refs[1] == await store.put(b"x")
    if isinstance(store, S3BlobStore):
        digest = refs[0].split(":")[1]
        assert await objects(store) == [f"attachments/{digest[:2]}/{digest[2:4]}/{digest}"]


async def test_a_reference_is_checked_against_the_content(store: FileBlobStore) -> None:
    data = b"an upload hashed once by the connector"
    assert await store.put(data, blob_ref(data)) == blob_ref(data)
    with pytest.raises(ValueError):
        await store.put(b"mine", blob_ref(b"other content"))
    assert not await store.exists(blob_ref(b"mine"))
    for ref in ("../../etc/passwd", "sha256:../../x", "md5:abc"):
        with pytest.raises(ValueError, match="not a blob reference"):
            await store.get(ref)


async def test_a_stream_of_several_parts_is_stored_under_its_digest(
        store: FileBlobStore) -> None:
    total = 3 * PART + 12345
    expected = hashlib.sha256()
    async for chunk in _chunks(total):
        expected.update(chunk)
    stored = await store.put_stream(_chunks(total))
    assert stored.ref == f"sha256:{expected.hexdigest()}" and stored.size == total
    assert hashlib.sha256(await store.get(stored.ref)).hexdigest() == stored.sha256
    again = await store.put_stream(_chunks(total))
    assert again == stored
    if isinstance(store, S3BlobStore):  # no upload object left, no upload open
        digest = stored.sha256
        assert await objects(store) == [f"attachments/{digest[:2]}/{digest[2:4]}/{digest}"]
        assert await uploads(store) == []


async def test_a_small_stream_reads_back(store: FileBlobStore) -> None:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"hello ", b"stream"):
            yield part

    stored = await store.put_stream(parts())
    assert stored.ref == blob_ref(b"hello stream") and stored.size == 12
    assert await store.get(stored.ref) == b"hello stream"


async def test_a_stream_over_its_limit_stores_nothing(store: FileBlobStore) -> None:
    with pytest.raises(BlobTooLarge):
        await store.put_stream(_chunks(3 * PART), max_bytes=2 * PART)
    if isinstance(store, S3BlobStore):  # its first part was uploaded: the upload is aborted
        assert await objects(store) == [] and await uploads(store) == []


async def test_the_setting_picks_the_backend_and_doctor_probes_it(
        s3_endpoint: str, tmp_path: Path) -> None:
    assert isinstance(blob_store_for(IntakeSettings(data_dir=tmp_path)), FileBlobStore)
    bucket = f"{BUCKET}-{os.urandom(4).hex()}"
    await make_bucket(s3_endpoint, bucket)
    settings = IntakeSettings(data_dir=tmp_path,
                              blob_url=f"s3://{bucket}/p?endpoint={s3_endpoint}")
    store = blob_store_for(settings)
    assert isinstance(store, S3BlobStore) and store.prefix == "p"
    (finding,) = await check_blobs(settings)
    assert not finding.problem and "written, read back and deleted" in finding.text
    assert await objects(store) == []  # the probe is gone
    await store.close()
    missing = settings.model_copy(update={"blob_url": f"s3://no-such-bucket?endpoint="
                                                      f"{s3_endpoint}"})
    (finding,) = await check_blobs(missing)
    assert finding.problem and "NoSuchBucket" in finding.text, finding.line()
