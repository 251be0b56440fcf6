"""The blob store on S3 or any S3-compatible store (MinIO, Ceph, moto): `INTAKE_BLOB_URL=s3://…`.

Connector replicas on several nodes share attachments through it. Objects keep the file
store's content-addressed names, `<prefix>/<aa>/<bb>/<sha256>`. A `put` returns once S3 has
answered the PUT (S3 stores an object durably before it answers), carries the sha256 the
store computed as `x-amz-checksum-sha256` (AWS S3 refuses bytes that do not match it; moto,
which the tests use, does not check it), and is a no-op when the object exists. A stream
becomes a multipart upload to `<prefix>/incoming/<uuid>`, hashed as it is written; once
complete it is copied under its name (so no object is ever visible under a name its bytes
do not have) and the upload's object is deleted. S3's copy takes objects up to
5 GiB, far above any attachment or recording the gateway takes.

The URL is `s3://bucket[/prefix][?endpoint=URL&region=NAME]`; credentials, and the endpoint
and region when the URL has none, come from the standard `AWS_*` variables (botocore's chain:
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, `AWS_REGION`, a role).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .blobs import BlobTooLarge, StoredBlob, digest_of

PART_BYTES = 8 * 1024 * 1024  # S3 wants every part but the last at 5 MiB or more
HASH_ON_THREAD = 1024 * 1024  # hashing more than this leaves the event loop (GIL released)
INCOMING = "incoming"
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


class S3BlobStore:
    """Blobs as objects of one bucket, under one prefix; the client is made at first use."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str | None = None,
                 region: str | None = None, part_bytes: int = PART_BYTES) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.region = region
        self.part_bytes = part_bytes
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> S3BlobStore:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.hostname:
            raise ValueError(f"INTAKE_BLOB_URL: not an s3://bucket/prefix URL: {url!r}")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        unknown = set(query) - {"endpoint", "region"}
        if unknown:
            raise ValueError(f"INTAKE_BLOB_URL: unknown parameter(s) {sorted(unknown)}; "
                             "only endpoint and region")
        # The bucket as written (`hostname` would lower-case it).
        bucket = parts.netloc.rsplit("@", 1)[-1]
        return cls(bucket, parts.path, endpoint=query.get("endpoint"),
                   region=query.get("region"))

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" + (f" at {self.endpoint}"
                                                       if self.endpoint else "")

    def key(self, digest: str) -> str:
        return self._under(f"{digest[:2]}/{digest[2:4]}/{digest}")

    def _under(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    async def _s3(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    from aiobotocore.config import AioConfig
                    from aiobotocore.session import get_session

                    # Path-style: S3-compatible stores on one host name have no bucket DNS.
                    config = AioConfig(s3={"addressing_style": "path"} if self.endpoint
                                       else {}, retries={"max_attempts": 3, "mode": "standard"})
                    self._client = await self._stack.enter_async_context(
                        get_session().create_client("s3", endpoint_url=self.endpoint,
                                                    region_name=self.region, config=config))
        return self._client

    async def _call(self, operation: str, **arguments: Any) -> Any:
        """One S3 call; a storage failure is an OSError (callers answer "retry later")."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = await self._s3()
        try:
            return await getattr(client, operation)(Bucket=self.bucket, **arguments)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND:
                raise FileNotFoundError(f"no object {arguments.get('Key')}") from exc
            raise OSError(f"blob store {self.where}: {operation}: {code or exc}") from exc
        except BotoCoreError as exc:
            raise OSError(f"blob store {self.where}: {operation}: {exc}") from exc

    async def _has(self, key: str) -> bool:
        try:
            await self._call("head_object", Key=key)
        except FileNotFoundError:
            return False
        return True

    async def put(self, data: bytes, ref: str | None = None) -> str:
        expected = digest_of(ref) if ref is not None else None
        if len(data) > HASH_ON_THREAD:
            digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        else:
            digest = hashlib.sha256(data).hexdigest()
        if expected is not None and expected != digest:
            raise ValueError(f"put() was given sha256:{expected} for content that is "
                             f"sha256:{digest}")
        key = self.key(digest)
        if not await self._has(key):
            # AWS S3 refuses the object if its bytes do not hash to what we send.
            checksum = base64.b64encode(bytes.fromhex(digest)).decode()
            await self._call("put_object", Key=key, Body=data, ChecksumSHA256=checksum)
        return f"sha256:{digest}"

    async def put_stream(self, chunks: AsyncIterable[bytes], *,
                         max_bytes: int | None = None) -> StoredBlob:
        """A stream of parts into a multipart upload; a stream under one part is one put."""
        hasher = hashlib.sha256()
        size = 0
        piece: list[bytes] = []
        pending = 0
        upload = _Upload(self, self._under(f"{INCOMING}/{uuid.uuid4().hex}"))
        try:
            async for chunk in chunks:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise BlobTooLarge(f"the blob is over {max_bytes} bytes")
                piece.append(chunk)
                pending += len(chunk)
                if pending >= self.part_bytes:
                    data = b"".join(piece)
                    piece, pending = [], 0
                    await asyncio.to_thread(hasher.update, data)
                    await upload.part(data)
            data = b"".join(piece)
            if not upload.parts:
                return StoredBlob(await self.put(data), size)
            if data:
                await asyncio.to_thread(hasher.update, data)
                await upload.part(data)
            await upload.complete()
            digest = hasher.hexdigest()
            key = self.key(digest)
            if not await self._has(key):
                await self._call("copy_object", Key=key,
                                 CopySource={"Bucket": self.bucket, "Key": upload.key})
        finally:
            await upload.discard()
        return StoredBlob(f"sha256:{digest}", size)

    async def get(self, ref: str) -> bytes:
        key = self.key(digest_of(ref))
        try:
            response = await self._call("get_object", Key=key)
        except FileNotFoundError:
            raise FileNotFoundError(f"no blob {ref}") from None
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def exists(self, ref: str) -> bool:
        return await self._has(self.key(digest_of(ref)))

    async def delete(self, ref: str) -> None:
        """Remove a blob (only `intake doctor`'s probe: stored content is never deleted)."""
        await self._call("delete_object", Key=self.key(digest_of(ref)))

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None


class _Upload:
    """A multipart upload under a temporary key: started at its first part, then completed,
    and its object deleted (or the upload aborted) by `discard`."""

    def __init__(self, store: S3BlobStore, key: str) -> None:
        self.store = store
        self.key = key
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.completed = False

    async def part(self, data: bytes) -> None:
        if self.upload_id is None:
            started = await self.store._call("create_multipart_upload", Key=self.key)
            self.upload_id = str(started["UploadId"])
        number = len(self.parts) + 1
        answer = await self.store._call("upload_part", Key=self.key, UploadId=self.upload_id,
                                        PartNumber=number, Body=data)
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    async def complete(self) -> None:
        await self.store._call("complete_multipart_upload", Key=self.key,
                               UploadId=self.upload_id, MultipartUpload={"Parts": self.parts})
        self.completed = True

    async def discard(self) -> None:
        if self.upload_id is None:
            return
        with contextlib.suppress(OSError):  # a leftover is only space: lifecycle rules clean it
            if self.completed:
                await self.store._call("delete_object", Key=self.key)
            else:
                await self.store._call("abort_multipart_upload", Key=self.key,
                                       UploadId=self.upload_id)
