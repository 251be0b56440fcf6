"""The exported JSON Schemas are what the models say; a stale file fails here."""

from __future__ import annotations

import json

import pytest

from intake.cli import SCHEMA_DIR, schema_documents
from intake.message import Message
from tests.factories import form_message


@pytest.mark.parametrize("name", sorted(schema_documents()))
def test_exported_schema_file_is_current(name: str) -> None:
    on_disk = (SCHEMA_DIR / name).read_text(encoding="utf-8")
    assert on_disk == schema_documents()[name], (
        f"schemas/{name} is stale: run `.venv/bin/intake schema --write`")


def test_unknown_fields_are_refused() -> None:
    data = json.loads(form_message(1).model_dump_json())
    data["colour"] = "blue"
    with pytest.raises(ValueError, match="colour"):
        Message.model_validate(data)


def test_required_fields_are_required() -> None:
    data = json.loads(form_message(1).model_dump_json())
    for field in ("schema_version", "idempotency_key", "channel", "account", "kind", "sender",
                  "text", "received_at"):
        assert field in Message.model_json_schema()["required"]
        broken = {k: v for k, v in data.items() if k != field}
        if field == "schema_version":
            continue  # defaults to 1 for producers in Python; required in the exported schema
        with pytest.raises(ValueError):
            Message.model_validate(broken)


def test_idempotency_key_must_name_channel_account_and_id() -> None:
    data = json.loads(form_message(1).model_dump_json())
    data["idempotency_key"] = "just-an-id"
    with pytest.raises(ValueError, match="idempotency_key"):
        Message.model_validate(data)


def test_naive_timestamps_are_refused() -> None:
    data = json.loads(form_message(1).model_dump_json())
    data["received_at"] = "2026-11-25T10:00:00"
    with pytest.raises(ValueError, match="received_at"):
        Message.model_validate(data)


def test_round_trip_through_json_is_lossless() -> None:
    message = form_message(1)
    assert Message.model_validate_json(message.model_dump_json()) == message
