"""Issue 16's bad messages through the router's consumer (decide, stamp, serialise, publish)
with the example's rules: each routed, the mismatch visible in `saw`, never a crash."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic_core import PydanticSerializationError

from intake.message import Message
from router.consume import route_batch_handler
from router.reload import RulesHolder

from .conftest import make_message
from .test_consume import RecordingBus

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "intake.example.yaml"


def nested(depth: int) -> dict[str, Any]:
    top: dict[str, Any] = {}
    cursor = top
    for _ in range(depth):
        cursor["a"] = {}
        cursor = cursor["a"]
    return top


async def routed(*messages: Message) -> list[dict[str, Any]]:
    holder = RulesHolder(EXAMPLE)
    holder.load()
    bus = RecordingBus()
    await route_batch_handler(holder, bus)(list(messages))
    return [orjson.loads(body)["route"] for _, _, body, _ in bus.published]


async def test_a_5_mib_text_is_routed_within_the_bound() -> None:
    huge = make_message(text="订单" + "x" * (5 * 1024 * 1024) + "投诉",
                        form={"form_id": "contact", "fields": {"topic": "enquiry"}})
    began = time.perf_counter()
    [decision] = await routed(huge)
    # RE2 reads the first 10,000 characters for `matches` (the complaint word is past them);
    # Python's `re` took about 15 s on such texts (issue 10). Generous for a loaded machine.
    assert time.perf_counter() - began < 5.0
    assert decision["route"] == "default"
    failed = {t["route"]: t["failed"] for t in decision["tried"]}
    assert failed["complaints"] == "form.fields.topic == 'complaint' or text matches " \
        "'投诉|差评|举报|骗子'"
    # The same text, the complaint word within the bound: a complaint.
    near = huge.model_copy(update={"text": "投诉" + huge.text})
    [decision] = await routed(near)
    assert decision["route"] == "complaints"
    assert len(decision["tried"][-1]["saw"]["text"]) <= 201  # `saw` cuts texts at 200


async def test_the_deepest_form_fields_a_connector_can_publish_are_routed() -> None:
    # A connector serialises the message with the same model: past this depth it cannot
    # publish it, so no deeper message reaches the router.
    with pytest.raises(PydanticSerializationError):
        make_message(form={"form_id": "x", "fields": {"a": nested(255)}}).model_dump_json()
    deep = make_message(form={"form_id": "x", "fields": {"a": nested(254), "topic": 5}})
    [decision] = await routed(deep)
    assert decision["route"] == "default"
    # A number where the rules expect a word: false, and what it saw says why.
    failed = {t["route"]: t["failed"] for t in decision["tried"]}
    assert failed["complaints"] == "form.fields.topic == 'complaint' or text matches " \
        "'投诉|差评|举报|骗子'"


async def test_a_message_with_only_its_required_fields_is_routed() -> None:
    bare = Message.model_validate({
        "idempotency_key": "webform:contact:bare", "channel": "webform", "account": "contact",
        "kind": "message", "sender": {"identities": []}, "text": "",
        "received_at": "2026-01-05T02:00:00Z"})
    [decision] = await routed(bare)
    assert decision["route"] == "default"
    assert decision["customer"]["lookup"] == "skipped"  # no directory here
