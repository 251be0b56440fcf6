"""The SDK's socket and FAQ scenarios (off the default run, so not in test_smoke's) stay
runnable: a quick `make bench SCENARIO=sdk-socket,sdk-idle,sdk-faq` passes its checks and
reports its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .test_smoke import REPO, require_rabbitmq

pytestmark = pytest.mark.rabbitmq


@pytest.mark.timeout(180)
def test_a_quick_socket_run_acks_pushes_and_pongs_everything(tmp_path: Path) -> None:
    require_rabbitmq()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTAKE_")}
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--scenario",
                           "sdk-socket,sdk-idle,sdk-faq", "--results", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [path] = tmp_path.glob("*.json")
    results = {r["scenario"]: r for r in json.loads(path.read_text())["results"]}
    assert set(results) == {"raw", "sdk-socket-ack", "sdk-socket-ack-max", "sdk-reply-push",
                            "sdk-reply-push-max", "sdk-idle", "sdk-faq"}
    assert all(r["ok"] for r in results.values()), results
    assert results["sdk-socket-ack-max"]["check"]["missing"] == 0
    assert results["sdk-reply-push-max"]["check"]["doubled"] == 0
    assert results["sdk-reply-push"]["latency"]["count"] == results["sdk-reply-push"]["messages"]
    assert results["sdk-idle"]["extra"]["fds_per_socket"] >= 1.0  # each socket an open file
    faq = results["sdk-faq"]
    assert faq["extra"]["articles"] == 200 and faq["latency"]["count"] == faq["messages"] == 100
