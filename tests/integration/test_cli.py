"""The `intake` command as ops run it: dead letters on the real broker, config check."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from intake.bus import Bus
from intake.cli import api_token_line
from intake.message import Message
from intake.settings import IntakeSettings
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


# -- intake run: what it imports, what it prints --------------------------------------------

BROKEN_CONNECTOR = 'raise ImportError("the vendor SDK is not installed")\n'
COMMAND_CONNECTOR = '''"""A test channel whose only part is a command: `intake echoer hello`."""
from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from intake import Channel, Command


class EchoerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTAKE_ECHOER_")
    port: int = 8099


class EchoerAccounts(BaseModel):
    pass


def hello_arguments(parser):
    parser.add_argument("--name", required=True)


def hello(args):
    print(f"hello {args.name}")
    return 0


CHANNEL = Channel(name="echoer", settings=EchoerSettings, accounts=EchoerAccounts,
                  commands=[Command("hello", "say hello", hello, hello_arguments)])
'''


def extra_connectors(root: Path) -> Path:
    """A `connectors/` folder outside the repository with a broken and a command connector."""
    for name, source in (("broken", BROKEN_CONNECTOR), ("echoer", COMMAND_CONNECTOR)):
        package = root / "connectors" / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(source, encoding="utf-8")
    (root / "connectors" / "__init__.py").write_text("", encoding="utf-8")
    return root


def run_env(tmp_path: Path, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTAKE_")}
    env.update({
        "PYTHONPATH": os.pathsep.join([str(REPO), str(extra_connectors(tmp_path / "extra"))]),
        "INTAKE_BUS_PREFIX": prefix, "INTAKE_DATA_DIR": str(tmp_path / "var"),
        "INTAKE_TICKET_CORE_PORT": str(free_port()), "INTAKE_ROUTER_PORT": str(free_port()),
        "INTAKE_LOG_LEVEL": "warning",
    })
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def intake_with(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "intake.cli", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def run_until_started(env: dict[str, str], service: str) -> str:
    """`intake run SERVICE` until its banner is out, then SIGTERM; the banner's text."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "intake.cli", "run", service, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    first = b""
    began = time.monotonic()
    try:
        first = await asyncio.wait_for(process.stdout.readline(), 60)
    finally:
        banner_s = time.monotonic() - began
        process.send_signal(signal.SIGTERM)
        try:
            out, err = await asyncio.wait_for(process.communicate(), 60)
        except TimeoutError:
            process.kill()
            out, err = await process.communicate()
            raise AssertionError(
                f"intake run {service} did not stop on SIGTERM within 60 s (signalled "
                f"{banner_s:.1f} s after start, first line {first!r}); stdout: "
                f"{out.decode()[-1000:]}; stderr: {err.decode()[-6000:]}") from None
    assert first.decode().startswith("intake is running"), (first, err.decode()[-3000:])
    assert process.returncode == 0, err.decode()[-6000:]
    return first.decode() + out.decode()


async def test_a_broken_connector_stops_neither_ticket_core_nor_router(
        bus: Bus, tmp_path: Path) -> None:
    env = run_env(tmp_path, bus.settings.bus_prefix, INTAKE_API_TOKEN="s3cret-from-env")
    banner = await run_until_started(env, "ticket-core")
    assert "ticket-core" in banner
    # A token from the environment is never printed; the banner says where it comes from.
    assert "s3cret-from-env" not in banner
    assert "agent API token: from INTAKE_API_TOKEN" in banner

    banner = await run_until_started(env, "router")
    assert "router" in banner

    code, _, err = await intake_with(env, "run", "all")
    assert code == 2
    assert "connector 'broken' cannot be loaded: ImportError: the vendor SDK" in err


async def test_a_thread_left_running_does_not_keep_a_stopped_service_alive(
        bus: Bus, tmp_path: Path) -> None:
    # A library thread that is no daemon and never ends (aiosqlite's, for a connection whose
    # opening the shutdown cancelled) made the interpreter wait at exit for ever.
    leaky = tmp_path / "leaky"
    leaky.mkdir()
    (leaky / "sitecustomize.py").write_text(
        "import threading\n"
        "threading.Thread(target=threading.Event().wait, name='leaked-worker').start()\n",
        encoding="utf-8")
    env = run_env(tmp_path, bus.settings.bus_prefix, INTAKE_API_TOKEN="t")
    env["PYTHONPATH"] = os.pathsep.join([str(leaky), env["PYTHONPATH"]])
    began = time.monotonic()
    banner = await run_until_started(env, "ticket-core")  # asserts exit 0 within 60 s
    assert "ticket-core" in banner
    assert time.monotonic() - began < 55


async def test_intake_run_prints_a_token_only_when_it_generated_it(
        bus: Bus, tmp_path: Path) -> None:
    env = run_env(tmp_path, bus.settings.bus_prefix)
    banner = await run_until_started(env, "ticket-core")
    token_file = tmp_path / "var" / "api-token"
    token = token_file.read_text().strip()
    assert f"agent API token: {token} (generated now, kept in {token_file})" in banner
    # The next start finds the file: it says where the token is, not what it is.
    settings = IntakeSettings(data_dir=tmp_path / "var")
    assert api_token_line(settings, generated=False) == f"agent API token: in {token_file}"


async def test_a_channel_command_runs_with_its_own_arguments(tmp_path: Path) -> None:
    env = run_env(tmp_path, "unused")
    code, out, err = await intake_with(env, "echoer", "hello", "--name", "Ada")
    assert (code, out) == (0, "hello Ada\n"), err
    code, out, _ = await intake_with(env, "echoer", "--help")
    assert code == 0 and "hello" in out and "say hello" in out
    code, _, err = await intake_with(env, "echoer", "hello")
    assert code == 2 and "--name" in err  # argparse's own usage error
    code, _, err = await intake_with(env, "nosuchthing")
    assert code == 2 and "invalid choice" in err
    code, out, _ = await intake_with(env, "connectors", "list")
    assert code == 1 and "echoer " in out and "webform " in out
    assert "broken       BROKEN: ImportError: the vendor SDK is not installed" in out


async def test_the_fault_hook_is_refused_outside_the_test_harness(tmp_path: Path) -> None:
    env = run_env(tmp_path, "unused", INTAKE_FAULT="crash_after_commit:1")
    code, _, err = await intake_with(env, "run", "ticket-core")
    assert code == 2
    assert "INTAKE_FAULT is set but INTAKE_TEST_HARNESS is not" in err


async def test_a_relative_path_that_does_not_exist_is_an_error_naming_the_variable(
        tmp_path: Path) -> None:
    env = run_env(tmp_path, "unused", INTAKE_CONFIG="deploy/nowhere.yaml")
    code, _, err = await intake_with(env, "run", "router")
    assert code == 2
    assert f"INTAKE_CONFIG: deploy/nowhere.yaml does not exist (relative to {REPO})" in err
    code, _, err = await intake_with(env, "config", "check")
    assert code == 1 and "INTAKE_CONFIG: deploy/nowhere.yaml does not exist" in err
    env = run_env(tmp_path / "rules", "unused", INTAKE_RULES="routing.yaml")
    code, _, err = await intake_with(env, "config", "check")
    assert code == 1 and "INTAKE_RULES: routing.yaml does not exist" in err
