"""A few seconds of `make bench` (tiny N, SQLite), so the benchmark cannot rot.

It needs only RabbitMQ: skipped with the reason when the broker is unreachable, failed under
CI=true.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.result import Options
from bench.runner import select
from bench.scenarios import discover

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.rabbitmq


def require_rabbitmq() -> None:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=2):
            return
    except OSError:
        message = "RabbitMQ is not reachable at 127.0.0.1:5672 (run `make services`)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def test_the_default_selection_is_every_default_scenario_raw_first() -> None:
    scenarios, loads = discover()
    chosen = select(scenarios, ["all"])
    assert chosen[0].name == "raw"
    assert "memory" not in [s.name for s in chosen]
    assert [s.name for s in select(scenarios, ["webform"])] == [
        "raw", "webform-closed", "webform-open", "webform-sweep"]
    channels = [load.channel for load in loads]
    assert "webform" in channels  # and every load is a connector's
    assert all((REPO / "connectors" / channel / "channel.py").is_file() for channel in channels)
    assert Options(scenarios=["all"]).concurrency == 32


@pytest.mark.timeout(180)
def test_a_quick_run_writes_every_scenarios_figures_and_passes_exactly_once(
        tmp_path: Path) -> None:
    require_rabbitmq()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTAKE_")}
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--results", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [path] = tmp_path.glob("*.json")
    report = json.loads(path.read_text())
    assert report["failures"] == []
    assert report["raw_ceiling"]["hop_per_s"] > 0
    assert report["machine"]["cpu_count"] and report["versions"]["rabbitmq"]
    results = {}
    for r in report["results"]:
        results.setdefault(r["scenario"], []).append(r)
    scenarios, _ = discover()
    expected = {s.name for s in select(scenarios, ["all"])}
    assert set(results) == expected
    loads = [r["load"] for r in results["router-decision"]]
    assert loads[:3] == ["10 rules", "200 rules", "200 rules, when language"]
    assert len(loads) > 3 and all(load.startswith("hostile: ") for load in loads[3:])
    [timers] = results["timers"]
    assert timers["extra"]["fired"] == timers["extra"]["moved"] == timers["messages"]
    for name, rows in results.items():
        for r in rows:
            assert r["ok"], (name, r.get("failure"))
            assert r["throughput"] and r["throughput"] > 0, name
            if name not in ("router-service", "timers"):
                assert r["latency"]["p50"] is not None and r["latency"]["p99"] is not None
            if name not in ("raw", "router-decision", "timers"):
                assert r["check"]["ok"] and r["check"]["missing"] == 0, name
                assert r["rss_mb"], name
                assert r["ratio"] is not None, name
            if name.startswith("webform") or name == "mixed":
                assert r["http"]["p99"] is not None
    assert "webform-closed" in done.stdout  # the table was printed
