"""The runner: start the gateway, run the scenarios, print the table, write the JSON.

`python -m bench --help` for the options; the Makefile's `bench` target maps SCENARIO, N, RATE,
C, DB, BASELINE and PROFILE onto them. Exit status 1 when any scenario failed (lost or doubled
messages, failed requests, an error), 2 for bad options.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from intake.channel import discover_channels

from .check import ExactlyOnceFailed
from .gateway import Database, Gateway, RssSampler, delete_topology, roll_broker_log
from .machine import machine_facts, rabbitmq_version
from .report import compare, render
from .result import Context, Options, Result, Scenario
from .scenarios import discover

RESULTS = Path(__file__).resolve().parent / "results"
AMQP_URL = os.environ.get("INTAKE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/").split(",")[0]


def select(scenarios: list[Scenario], wanted: list[str]) -> list[Scenario]:
    """`all` (the defaults), exact names, or a group prefix (`webform` = webform-*).

    raw always runs first: every ratio and the default open-loop rate come from it.
    """
    if not wanted or wanted == ["all"]:
        chosen = [s for s in scenarios if s.default]
    else:
        chosen = []
        for name in wanted:
            found = [s for s in scenarios if s.name == name or s.name.startswith(f"{name}-")]
            if not found:
                known = ", ".join(s.name for s in scenarios)
                raise SystemExit(f"unknown scenario {name!r} (known: {known}, all)")
            chosen.extend(s for s in found if s not in chosen)
    if not any(s.name == "raw" for s in chosen):
        chosen.insert(0, next(s for s in scenarios if s.name == "raw"))
    return sorted(chosen, key=lambda s: s.order)


def parse(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--scenario", default="all",
                        help="comma-separated scenario names or groups (default: all)")
    parser.add_argument("-n", type=int, default=None, help="messages per scenario")
    parser.add_argument("--rate", type=float, default=None,
                        help="open-loop rate per second (default 0.2 × the raw hop)")
    parser.add_argument("-c", "--concurrency", type=int, default=32,
                        help="closed-loop clients")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a previous run's JSON to compare with")
    parser.add_argument("--profile", action="store_true", help="py-spy flame graph per service")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes for the smoke test (seconds)")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="where the JSON (and logs, flame graphs) go")
    args = parser.parse_args(argv)
    options = Options(scenarios=[s.strip() for s in args.scenario.split(",") if s.strip()],
                      n=args.n or None, rate=args.rate or None, concurrency=args.concurrency,
                      db=args.db, quick=args.quick, profile=args.profile)
    return options, args


def busy_warning() -> str | None:
    """Other work on the cores skews every figure: say so in the output and the JSON."""
    load = os.getloadavg()[0]
    cores = os.cpu_count() or 1
    if load > 0.5 * cores:
        return (f"note: load average {load:.1f} on {cores} cores from other processes: the "
                "figures of this run are not comparable with a run on an idle machine")
    return None


def raise_file_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    options, args = parse(argv)
    if args.baseline is not None and not args.baseline.exists():
        print(f"baseline {args.baseline} not found", file=sys.stderr)
        return 2
    try:
        import uvloop
        return uvloop.run(run(options, args.results, args.baseline))
    except ImportError:  # pragma: no cover - uvloop is a pinned dependency
        return asyncio.run(run(options, args.results, args.baseline))


async def run(options: Options, results_dir: Path, baseline: Path | None) -> int:
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    run_id = f"{int(time.time())}{os.getpid() % 1000:03d}"
    prefix = f"bench{run_id}"
    all_scenarios, loads = discover()
    scenarios = select(all_scenarios, options.scenarios)
    results_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 (before any load)
    out_dir = results_dir / stamp
    out_dir.mkdir(exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="intake-bench-"))
    connectors = tuple(discover_channels())
    print(f"bench {stamp}: {', '.join(s.name for s in scenarios)} on {options.db} "
          f"(prefix {prefix}; logs in {out_dir})", flush=True)
    busy = busy_warning()
    if busy:
        print(busy, file=sys.stderr, flush=True)

    report: dict[str, Any] = {
        "started_at": started.isoformat(), "machine": machine_facts(),
        "settings": {"db": options.db, "n": options.n, "rate": options.rate,
                     "concurrency": options.concurrency, "quick": options.quick,
                     "profile": options.profile, "scenarios": [s.name for s in scenarios],
                     "sweep_step_s": options.sweep_step_s,
                     "knee_p99_ms": options.knee_p99_ms,
                     "services": ["ticket-core", "router", *connectors],
                     "service_env": {k: v for k, v in sorted(os.environ.items())
                                     if k.startswith("INTAKE_") and "TOKEN" not in k}},
        "versions": {}, "results": [], "failures": [],
    }
    results: list[Result] = []
    failures: list[str] = []
    # A load may need something of its own first (WeChat's: a fake WeChat API), and hands the
    # services the settings that point at it.
    for load in loads:
        if hasattr(load, "start"):
            os.environ.update(await load.start())
    database = await Database.create(options.db, data_dir, run_id)
    gateway = Gateway(prefix=prefix, database=database, data_dir=data_dir, out_dir=out_dir,
                      profile=options.profile, services=("ticket-core", "router", *connectors))
    from ticket_core.db import make_engine, migrate

    await migrate(database.url)
    engine = make_engine(database.url)
    rss = RssSampler(gateway)
    rss.start()
    # An open loop above capacity keeps many requests in flight: past the connection cap they
    # wait in the client, still timed from their scheduled start.
    raise_file_limit()
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024),
                                 timeout=aiohttp.ClientTimeout(total=None, sock_read=120))
    ctx = Context(options=options, amqp_url=AMQP_URL, prefix=prefix, run_id=run_id,
                  gateway=gateway, engine=engine, rss=rss, http=http, loads=loads)
    try:
        report["versions"] = {"python": sys.version.split()[0],
                              "rabbitmq": await rabbitmq_version(AMQP_URL),
                              "database": await database.version()}
        warned_roll = False
        for scenario in scenarios:
            began = time.monotonic()
            print(f"{scenario.name} …", flush=True)
            try:
                if scenario.needs_gateway:
                    await gateway.start()
                    if not await roll_broker_log() and not warned_roll:
                        warned_roll = True
                        ctx.log("could not roll the broker's log over (rabbitmqctl): a WAL "
                                "rollover may stall a scenario")
                    # What the last scenario left behind (a database checkpoint, the broker
                    # compacting its log, the kernel writing their dirty pages back, which
                    # stalls every fsync meanwhile) must not be counted against this one.
                    quiet_after = await rss.wait_quiet()
                    await asyncio.to_thread(os.sync)  # after the broker's segment writes too
                    quiet_after += await rss.wait_quiet()
                    if quiet_after > 1.0:
                        ctx.log(f"waited {quiet_after:.1f} s for the machine to settle")
                produced = await scenario.run(ctx)
            except ExactlyOnceFailed as exc:
                failures.append(str(exc.args[0]))
                produced = [exc.args[1]] if len(exc.args) > 1 else []
                print(f"FAILED {exc.args[0]}", file=sys.stderr, flush=True)
            except Exception as exc:
                failures.append(f"{scenario.name}: {exc!r}")
                traceback.print_exc()
                produced = [Result(scenario=scenario.name, messages=0, load="-",
                                   throughput=None, ok=False, failure=repr(exc)[:500])]
            for result in produced:
                result.extra.setdefault("scenario_seconds", round(time.monotonic() - began, 1))
            results.extend(produced)
    finally:
        await http.close()
        for client in ctx.lean.values():
            await client.close()
        await gateway.stop()
        await rss.stop()
        await engine.dispose()
        try:
            await delete_topology(AMQP_URL, prefix, [f"{prefix}.bench.raw"] + [
                f"{gateway.prefix}.intake.outbound.{c}" for c in connectors])
        except Exception as exc:
            print(f"could not delete the run's exchanges and queues: {exc!r}", file=sys.stderr)
        await database.drop()
        shutil.rmtree(data_dir, ignore_errors=True)
        for load in loads:
            if hasattr(load, "close"):
                await load.close()

    raw = next((r for r in results if r.scenario == "raw"), None)
    report["raw_ceiling"] = raw.extra if raw else None
    report["results"] = [r.as_dict() for r in results]
    report["failures"] = failures
    report["profiles"] = gateway.profiles
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    report["machine"]["busy_warning"] = busy  # at the end the load is our own
    report["finished_at"] = datetime.now(UTC).isoformat()
    report["seconds"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    path = results_dir / f"{stamp}.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    print()
    print(render(report["results"]))
    if baseline is not None:
        print()
        previous = json.loads(baseline.read_text(encoding="utf-8"))  # noqa: ASYNC240
        print(compare(report, previous))
    if gateway.profiles:
        from .flame import summary

        print("\nflame graphs (where the time goes):")
        for svg in gateway.profiles:
            if Path(svg).exists():  # noqa: ASYNC240 (the run is over)
                print(summary(Path(svg)))
    print(f"\nresults: {path} ({report['seconds']} s)")
    if report["machine"]["busy_warning"]:
        print(report["machine"]["busy_warning"])
    if failures:
        print("\nBENCHMARK FAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0
