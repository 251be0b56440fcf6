"""The SDK's edge: session bodies, ticket and message bodies, FAQ queries and socket frames
through the real aiohttp handlers. No 5xx, every refusal in the one error shape, nothing
published for a refusal, and a socket either answers or closes with one of its codes."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from aiohttp import WSMsgType
from hypothesis import strategies as st

from connectors.sdk.channel import CHANNEL
from connectors.sdk.inbound.identity import user_hash
from intake.settings import REPO_ROOT
from intake.testing import RecordingPublisher, connector_client

from .edge import Edge
from .harness import Target, hostile_text

CONFIG = REPO_ROOT / "connectors" / "sdk" / "example.yaml"
SECRET = "demo-app-identity-secret-for-tests-only-7f3a9c"
BASE = "/sdk/v1/apps/demo-app"
CLOSE_CODES = {1000, 1003, 1007, 1009, 4400, 4401, 4429}
publisher = RecordingPublisher()
TOKENS: dict[str, str] = {}


async def _start() -> Any:
    os.environ["INTAKE_DATA_DIR"] = tempfile.mkdtemp(prefix="fuzz-sdk-")
    client = await connector_client(CHANNEL, CONFIG, publisher)
    async with client.post(f"{BASE}/sessions", json={
            "user": {"id": "u-fuzz"}, "user_hash": user_hash(SECRET, "u-fuzz")}) as response:
        TOKENS["user"] = (await response.json())["session_token"]
    return client


EDGE = Edge(_start)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), hostile_text())
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(hostile_text(10), inner, max_size=4)),
    max_leaves=12)
RAW = [b"[" * 5000 + b"]" * 5000, b'{"text": "\\ud800"}', b'{"text": NaN}', b"", b"\xff\xfe",
       b'{"a":' * 2000 + b"1" + b"}" * 2000, b'"s"', b"null", b'{"text": 1e999}']


@st.composite
def bodies(draw: st.DrawFn, valid: dict[str, Any]) -> bytes:
    kind = draw(st.sampled_from(["mutated", "mutated", "random", "raw"]))
    if kind == "raw":
        return draw(st.sampled_from(RAW))
    if kind == "random":
        return json.dumps(draw(json_values)).encode()
    data = dict(valid)
    for name in draw(st.lists(st.sampled_from([*valid, "attachments", "fields", "ticket_id",
                                               "x"]), max_size=3)):
        data[name] = draw(json_values)
    return json.dumps(data, ensure_ascii=draw(st.booleans())).encode()


def _post(path: str, body: bytes, *, auth: bool = True) -> None:
    before = len(publisher.messages)
    headers = {"Content-Type": "application/json"}
    if auth:
        EDGE._ready()  # started: the session token exists
        headers["Authorization"] = f"Bearer {TOKENS['user']}"
    status, _, answer = EDGE.request("POST", BASE + path, headers=headers, data=body)
    if status not in (200, 201):
        assert len(publisher.messages) == before, (status, answer[:200])
    del publisher.messages[:]


def check_session(body: bytes) -> None:
    _post("/sessions", body, auth=False)


def check_ticket(body: bytes) -> None:
    _post("/tickets", body)


def check_message(body: bytes) -> None:
    _post("/messages", body)


def check_faq(query: str) -> None:
    _, client = EDGE._ready()

    async def search() -> None:
        async with client.get(f"{BASE}/faq/search", params={"q": query}) as response:
            assert response.status in (200, 422), response.status

    EDGE.run(search())


frames = st.one_of(
    st.builds(lambda v: json.dumps(v), json_values),
    st.builds(lambda t, m: json.dumps({"type": t, **m}),
              st.sampled_from(["message", "typing", "read", "ping", "hello", "x"]),
              st.dictionaries(st.sampled_from(["client_msg_id", "text", "ticket_id", "seq",
                                               "state", "attachments", "after"]),
                              json_values, max_size=4)),
    st.sampled_from([r.decode("utf-8", "replace") for r in RAW]),
    st.binary(max_size=64))


def check_frames(sequence: list[Any]) -> None:
    _, client = EDGE._ready()

    async def session() -> None:
        ws = await client.ws_connect(f"{BASE}/ws")
        try:
            await ws.send_json({"type": "hello", "session_token": TOKENS["user"]})
            while json.loads((await ws.receive(timeout=5)).data)["type"] != "synced":
                pass
            for frame in sequence:
                if isinstance(frame, bytes):
                    await ws.send_bytes(frame)
                else:
                    await ws.send_str(frame)
                message = await ws.receive(timeout=5)
                if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED):
                    assert message.data in CLOSE_CODES or ws.close_code in CLOSE_CODES, (
                        message, ws.close_code)
                    return
                assert message.type == WSMsgType.TEXT, message
                assert isinstance(json.loads(message.data).get("type"), str)
        finally:
            await ws.close()

    EDGE.run(session())
    del publisher.messages[:]


def targets() -> list[Target]:
    return [
        Target("sdk_sessions", bodies({"user": {"id": "u-fuzz"}, "user_hash": "0" * 64}),
               check_session),
        Target("sdk_tickets", bodies({"client_msg_id": "c", "text": "hi",
                                      "fields": {"category": "售后"}}), check_ticket),
        Target("sdk_messages", bodies({"client_msg_id": "m", "text": "hi"}), check_message),
        Target("sdk_faq", hostile_text(200), check_faq, scale=0.5),
        Target("sdk_socket_frames", st.lists(frames, min_size=1, max_size=4), check_frames,
               scale=0.2),
    ]
