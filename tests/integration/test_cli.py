"""The `intake` command as ops run it: dead letters on the real broker, config check."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from intake.bus import Bus
from intake.message import Message
from tests.factories import form_message
from tests.support import eventually

REPO = Path(__file__).resolve().parents[2]


async def intake(*args: str, prefix: str = "", config: Path | None = None,
                 ) -> tuple[int, str, str]:
    env = dict(os.environ, INTAKE_BUS_PREFIX=prefix)
    if config is not None:
        env["INTAKE_CONFIG"] = str(config)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "intake.cli", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_dlq_list_show_and_replay(bus: Bus) -> None:
    poison = form_message("dlq-1")
    await bus.dead_letter(poison.model_dump_json().encode(), "unknown_desk",
                          "desk 'nowhere' does not exist", queue=bus.names("router"),
                          exchange=bus.names("inbound"), routing_key=poison.routing_key)
    prefix = bus.settings.bus_prefix

    code, out, _ = await intake("dlq", "list", "--json", prefix=prefix)
    assert code == 0
    [letter] = json.loads(out)
    assert letter["reason"] == "unknown_desk"
    assert letter["idempotency_key"] == "webform:contact:dlq-1"

    code, out, _ = await intake("dlq", "show", letter["id"], prefix=prefix)
    assert code == 0
    shown = json.loads(out)
    assert shown["error"] == "desk 'nowhere' does not exist"
    assert shown["body"]["idempotency_key"] == "webform:contact:dlq-1"

    code, out, _ = await intake("dlq", "replay", letter["id"], prefix=prefix)
    assert code == 0 and f"replayed 1 dead letter(s)\n  {letter['id']}" in out

    seen: list[str] = []

    async def handler(message: Message) -> None:
        seen.append(message.idempotency_key)

    bus.consume("router", handler, Message)
    await eventually(lambda: seen == ["webform:contact:dlq-1"])
    code, out, _ = await intake("dlq", "list", prefix=prefix)
    assert out.strip() == "no dead letters"
    code, out, _ = await intake("dlq", "show", letter["id"], prefix=prefix)
    assert code == 0 and json.loads(out)["replayed_at"]  # replayed letters are kept


async def test_dlq_replay_with_a_repaired_body(bus: Bus, tmp_path: Path) -> None:
    broken = form_message("dlq-2").model_dump(mode="json")
    broken["channel"] = "carrier-pigeon"
    await bus.dead_letter(json.dumps(broken).encode(), "schema_invalid", "channel: bad value",
                          queue=bus.names("router"), exchange=bus.names("inbound"),
                          routing_key="webform.contact")
    [letter] = await bus.browse_dead()
    repaired = tmp_path / "repaired.json"
    repaired.write_text(json.dumps({**broken, "channel": "webform"}))
    prefix = bus.settings.bus_prefix

    code, out, _ = await intake("dlq", "replay", letter.id, "--body", str(repaired),
                                prefix=prefix)
    assert code == 0 and "replayed 1 dead letter(s)" in out
    seen: list[Message] = []

    async def handler(message: Message) -> None:
        seen.append(message)

    bus.consume("router", handler, Message)
    await eventually(lambda: len(seen) == 1)
    assert seen[0].channel == "webform" and seen[0].idempotency_key == "webform:contact:dlq-2"
    code, _, err = await intake("dlq", "replay", "--body", str(repaired), prefix=prefix)
    assert code == 2 and "usage" in err


async def test_config_check_names_file_line_and_field(tmp_path: Path) -> None:
    config = tmp_path / "intake.yaml"
    config.write_text(
        "desks:\n  - {id: general, name: General}\nroutes:\n  - id: r1\n"
        "    match: {channel: webform}\n    desk: nowhere\ndefault_route:\n  desk: general\n"
        "channels:\n  webform:\n    forms:\n      - id: contact\n        title: C\n"
        "        fields:\n          - {name: email, type: emial, label: E}\n"
        "  fax: {}\n", encoding="utf-8")
    code, _, err = await intake("config", "check", str(config))
    assert code == 1
    assert f"{config}:6: routes.0.desk: unknown desk 'nowhere'" in err
    assert f"{config}:15: channels.webform.forms.0.fields.0.type" in err
    assert f"{config}:16: channels.fax: unknown channel" in err


async def test_config_check_accepts_the_example() -> None:
    code, out, _ = await intake("config", "check")
    assert code == 0 and out.strip().endswith("intake.example.yaml: OK")


async def test_schema_prints_the_message_schema() -> None:
    code, out, _ = await intake("schema")
    assert code == 0
    assert json.loads(out)["title"] == "Message"
