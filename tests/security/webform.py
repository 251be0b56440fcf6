"""The web form edge on a test server for the hostile-input tests, with a recording publisher."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient

from connectors.webform.channel import CHANNEL
from intake.settings import REPO_ROOT
from intake.testing import RecordingPublisher, connector_client

CONFIG = REPO_ROOT / "deploy" / "intake.example.yaml"
VALID = {"name": "Li Wei", "email": "li.wei@example.cn", "topic": "complaint",
         "message": "我的订单还没有到", "consent": "on"}


@asynccontextmanager
async def webform(publisher: RecordingPublisher | None = None,
                  blobs: Any = None) -> AsyncIterator[TestClient[Any, Any]]:
    client = await connector_client(CHANNEL, CONFIG, publisher or RecordingPublisher(), blobs)
    try:
        yield client
    finally:
        await client.close()


def multipart(files: list[tuple[bytes, bytes]], boundary: bytes = b"XyZzY") -> tuple[str, bytes]:
    """A multipart body with the valid fields and `files` as (filename parameter, content).

    The filename parameter goes in as is: `b'"a.pdf"'`, or `b"*=UTF-8''a%00.pdf"` (RFC 5987).
    """
    parts = [b'Content-Disposition: form-data; name="' + name.encode() + b'"\r\n\r\n'
             + value.encode() for name, value in VALID.items()]
    parts += [b'Content-Disposition: form-data; name="attachment"; filename' + filename
              + b'\r\nContent-Type: application/pdf\r\n\r\n' + data for filename, data in files]
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return f"multipart/form-data; boundary={boundary.decode()}", body + b"--" + boundary + b"--\r\n"


def quoted(name: str) -> bytes:
    return b'="' + name.encode() + b'"'


def extended(name: str) -> bytes:
    """RFC 5987 `filename*`: any code point, NUL included, reaches the parser this way."""
    return b"*=UTF-8''" + urllib.parse.quote(name, safe="").encode()
