"""Outboxes per instance: each locked by its running instance; the unheld ones drained by
any instance of the service (a crashed or scaled-down replica's messages go out)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from intake.bus import Bus
from intake.errors import SettingInvalid
from intake.outbox import Outbox
from intake.outbox_files import (
    OutboxLock,
    all_outboxes,
    describe,
    drain_unheld,
    outbox_path,
    own_outbox,
    service_outboxes,
)
from intake.service import BUS, PUBLISHER, SERVICE_NAME, SETTINGS, publisher_context
from intake.settings import IntakeSettings
from tests.factories import form_message
from tests.support import eventually

from .test_outbox import router_queue_depth

HOLDER = """
import sys
from pathlib import Path
from intake.outbox_files import OutboxLock
lock = OutboxLock(Path(sys.argv[1]))
assert lock.acquire()
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def held_elsewhere() -> Iterator[object]:
    """`hold(path)` locks an outbox from another process until the test ends."""
    holders: list[subprocess.Popen[str]] = []

    def hold(path: Path) -> None:
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        holders.append(holder)

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()


def fill(path: Path, keys: list[str]) -> None:
    outbox = Outbox(path)
    for key in keys:
        message = form_message(key)
        outbox._append("inbound", message.routing_key, message.model_dump_json().encode(),
                       {"message_id": str(message.id)})
    outbox.close()


def test_an_outbox_lock_excludes_others_until_released(tmp_path: Path) -> None:
    path = outbox_path(tmp_path, "webform", "a")
    first, second = OutboxLock(path), OutboxLock(path)
    assert first.acquire()
    assert not second.acquire()
    first.release()
    assert second.acquire()
    second.release()


def test_a_lock_held_by_a_process_dies_with_it(tmp_path: Path) -> None:
    path = outbox_path(tmp_path, "webform", "crashed")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    assert not OutboxLock(path).acquire()
    holder.kill()  # kill -9: no cleanup runs
    holder.wait()
    lock = OutboxLock(path)
    assert lock.acquire()
    lock.release()


def test_the_outboxes_of_a_service_include_the_name_before_instances(tmp_path: Path) -> None:
    fill(outbox_path(tmp_path, "webform", "a"), [])
    fill(outbox_path(tmp_path, "webform", "pod-7f9c"), [])
    fill(tmp_path / "outbox" / "webform.sqlite3", [])
    fill(outbox_path(tmp_path, "email", "a"), [])
    names = [path.name for path in service_outboxes(tmp_path, "webform")]
    assert names == ["webform-a.sqlite3", "webform-pod-7f9c.sqlite3", "webform.sqlite3"]
    assert len(all_outboxes(tmp_path)) == 4


async def test_unheld_outboxes_are_drained_and_removed_held_ones_left(
        bus: Bus, tmp_path: Path, held_elsewhere: object) -> None:
    crashed = outbox_path(tmp_path, "webform", "crashed")
    legacy = tmp_path / "outbox" / "webform.sqlite3"
    running = outbox_path(tmp_path, "webform", "running")
    fill(crashed, ["c1", "c2", "c3"])
    fill(legacy, ["l1"])
    fill(running, ["r1", "r2"])
    held_elsewhere(running)  # type: ignore[operator]
    assert describe(running).held and not describe(crashed).held
    assert describe(crashed).depth == 3
    sent = await drain_unheld(bus, service_outboxes(tmp_path, "webform"))
    assert sent == 4
    assert await router_queue_depth(bus) == 4
    assert not crashed.exists() and not legacy.exists()
    assert not crashed.with_suffix(".lock").exists()
    assert describe(running).depth == 2  # its own instance drains it


def test_two_instances_with_one_id_on_one_volume_are_refused(tmp_path: Path) -> None:
    with own_outbox(tmp_path, "webform", "same") as outbox:
        assert outbox.path == outbox_path(tmp_path, "webform", "same")
        with pytest.raises(SettingInvalid, match="INTAKE_INSTANCE_ID"):
            with own_outbox(tmp_path, "webform", "same"):
                pass
    with own_outbox(tmp_path, "webform", "same"):
        pass  # released at close


async def test_a_connector_drains_the_outbox_its_crashed_sibling_left(
        settings: IntakeSettings, bus: Bus, tmp_path: Path) -> None:
    """The publisher context of a running instance finds the orphan, drains it, and its own
    outbox carries its instance name; at stop it drains what is left of its own."""
    fill(outbox_path(tmp_path, "webform", "gone"), ["g1", "g2"])
    app = web.Application()
    app[SETTINGS] = settings.model_copy(update={"instance_id": "alive"})
    app[SERVICE_NAME] = "webform"
    app[BUS] = bus
    context = publisher_context(app)
    await anext(context)
    try:
        own = app[PUBLISHER].outbox.path
        assert own.name == "webform-alive.sqlite3"
        await eventually(lambda: not outbox_path(tmp_path, "webform", "gone").exists(),
                         timeout=15)
        assert await router_queue_depth(bus) == 2
        # A message left in its own outbox (as if the broker had just been away) is out by the
        # time the context has stopped (its drain task, or the last drain at stop).
        message = form_message("at-stop")
        await app[PUBLISHER].outbox.append("inbound", message.routing_key,
                                           message.model_dump_json().encode())
    finally:
        with pytest.raises(StopAsyncIteration):
            await anext(context)
    await eventually(lambda: router_queue_depth(bus), timeout=5)
    assert await router_queue_depth(bus) == 3
    assert Outbox(own).depth == 0
