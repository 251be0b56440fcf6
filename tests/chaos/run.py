"""`make chaos`: run the fault scenarios, print the table, write JSON, fail on loss or doubles.

    python -m tests.chaos.run [--count 10000] [--quick] [--only broker_outage,poison]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .email_load import email_broker_outage, email_postgres_restart, email_service_kills
from .harness import HarnessUnavailable, check_prerequisites
from .scenarios import SCENARIOS, Lab, Result
from .sdk import SDK_SCENARIOS
from .telephony import telephony_faults

# Scenarios with a quick test of their own (tests/chaos/test_chaos_<name>.py), so that
# test_chaos_quick.py, which runs SCENARIOS, does not run them twice.
OWN_TESTS = {"telephony_faults": telephony_faults, **SDK_SCENARIOS}

SCENARIOS["email_service_kills"] = email_service_kills
SCENARIOS["email_broker_outage"] = email_broker_outage
SCENARIOS["email_postgres_restart"] = email_postgres_restart
ALL_SCENARIOS = {**SCENARIOS, **OWN_TESTS}

RESULTS = Path(__file__).resolve().parent / "results"

# Per scenario: keyword arguments for the full run and the quick one (inside `make test`).
FULL: dict[str, dict[str, Any]] = {
    "broker_restarts": {"restarts": 5, "down_s": 2.0},
    "service_kills": {"kills": 10, "crash_after_commit": 0.01},
    "broker_outage": {"down_s": 30.0},
    "outbox_full": {"down_s": 10.0},
    "postgres_restart": {"down_s": 10.0},
    "poison": {},
    "graceful_shutdown": {"rounds": 2},
    "webform_kill_mid_drain": {"down_s": 10.0},
    "queue_deleted": {"deletions": 4},
    "cluster_leader_kill": {"down_s": 5.0},
    "wechat_broker_restarts": {"restarts": 3, "down_s": 2.0},
    "email_service_kills": {"kills": 8, "broker_restarts": 2, "down_s": 2.0},
    "email_broker_outage": {"down_s": 30.0},
    "email_postgres_restart": {"down_s": 10.0},
    "telephony_faults": {"kills": 4, "down_s": 10.0, "pbx_calls": 80},
    "sdk_socket_faults": {"users": 50, "down_s": 2.0},
}
QUICK: dict[str, dict[str, Any]] = {
    "broker_restarts": {"restarts": 1, "down_s": 0.5},
    "service_kills": {"kills": 3, "crash_after_commit": 0.02},
    "broker_outage": {"down_s": 5.0},
    "outbox_full": {"down_s": 3.0},
    "postgres_restart": {"down_s": 2.0},
    "poison": {},
    "graceful_shutdown": {"rounds": 1},
    "webform_kill_mid_drain": {"down_s": 2.0},
    "queue_deleted": {"deletions": 2},
    "cluster_leader_kill": {"down_s": 3.0},
    "wechat_broker_restarts": {"restarts": 1, "down_s": 0.5},
    "email_service_kills": {"kills": 2, "broker_restarts": 1, "down_s": 0.5},
    "email_broker_outage": {"down_s": 3.0},
    "email_postgres_restart": {"down_s": 2.0},
    "telephony_faults": {"kills": 2, "down_s": 3.0, "pbx_calls": 25},
    "sdk_socket_faults": {"users": 20, "down_s": 0.5},
}
COLUMNS = ("scenario", "sent", "accepted", "persisted", "lost", "dup tickets", "dup messages",
           "dead-lettered (reason)", "longest", "p99", "time")


def row(result: Result) -> list[str]:
    o = result.outcome
    dead = ", ".join(f"{n} {reason}" for reason, n in sorted(result.dead.items())) or "0"
    return [result.name, str(o.sent), str(o.accepted), str(o.persisted), str(o.lost),
            str(o.duplicated_tickets), str(o.duplicated_messages), dead,
            f"{o.longest_s:.1f} s", f"{o.p99_s:.1f} s", f"{result.seconds:.0f} s"]


def table(results: list[Result]) -> str:
    rows = [list(COLUMNS), *(row(r) for r in results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def run_all(names: list[str], count: int, quick: bool,
                  rate: float | None = None) -> list[Result]:
    lab = await asyncio.to_thread(Lab.start)
    lab.rate = rate
    results = []
    try:
        for name in names:
            kwargs = (QUICK if quick else FULL)[name]
            print(f"-- {name} ({count} submissions) ...", flush=True)
            result = await ALL_SCENARIOS[name](lab, count, **kwargs)
            results.append(result)
            verdict = "ok" if result.ok else "FAILED"
            print(f"   {verdict}: {result.outcome.accepted} accepted, "
                  f"{result.outcome.persisted} persisted, {result.outcome.lost} lost, "
                  f"{result.outcome.duplicated_tickets + result.outcome.duplicated_messages} "
                  f"duplicated, {result.seconds:.0f} s", flush=True)
            for problem in result.problems:
                print(f"   problem: {problem}", flush=True)
    finally:
        await asyncio.to_thread(lab.destroy)
    return results


def write_results(results: list[Result], count: int, quick: bool) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"chaos-{'quick' if quick else 'full'}-{stamp}.json"
    path.write_text(json.dumps({"count": count, "quick": quick, "finished_at": stamp,
                                "scenarios": [r.as_dict() for r in results]}, indent=2,
                               default=str))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run")
    parser.add_argument("--count", type=int, default=10_000, help="submissions per scenario")
    parser.add_argument("--quick", action="store_true", help="fewer faults, shorter outages")
    parser.add_argument("--rate", type=float, default=150.0,
                        help="submissions started per second, below the gateway's capacity so "
                             "that the longest time shows the faults; 0 = as fast as taken")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(ALL_SCENARIOS)
    unknown = set(names) - set(ALL_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(ALL_SCENARIOS)}")
    try:
        check_prerequisites()
    except HarnessUnavailable as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    began = time.monotonic()
    results = asyncio.run(run_all(names, args.count, args.quick, args.rate or None))
    print()
    print(table(results))
    path = write_results(results, args.count, args.quick)
    print(f"\n{len(results)} scenarios in {time.monotonic() - began:.0f} s; results in "
          f"{path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    failed = [r.name for r in results if not r.ok]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
