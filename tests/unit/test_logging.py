"""Every log line is JSON, whatever the order of imports and `configure_logging`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A module that binds its logger at import time, imported before logging is configured.
SCRIPT = """
import ticket_core.consume as early
from intake.logging import configure_logging, get_logger
configure_logging("info")
early.log.info("early_logger_line", n=1)
get_logger(service="late").info("late_logger_line", n=2)
"""


def test_a_logger_bound_at_import_writes_json_once_logging_is_configured() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=True)
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    events = {line["event"]: line for line in lines}
    assert events["early_logger_line"]["service"] == "ticket-core"
    assert events["early_logger_line"]["n"] == 1 and events["early_logger_line"]["level"] == "info"
    assert events["late_logger_line"]["service"] == "late"
