"""The printed table, and each figure beside a baseline run's with the change in per cent."""

from __future__ import annotations

import math
from typing import Any

COLUMNS = ("scenario", "messages", "load", "thru/s", "×hop", "p50", "p95", "p99", "max",
           "http p50", "http p99", "RSS MB (peak)", "check")


def _num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) < 10 and digits:
            return f"{value:.{max(digits, 2)}f}"
        return f"{value:.{digits}f}"
    return str(value)


def rows(results: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in results:
        latency = r.get("latency") or {}
        http = r.get("http") or {}
        unit = " µs" if r.get("unit") == "µs" else ""
        rss = " ".join(f"{name}={value:.0f}"
                       for name, value in (r.get("rss_mb") or {}).items())
        check = r.get("check")
        status = "-" if not check else ("ok" if check.get("ok") else "FAILED")
        if not r.get("ok", True) and status != "FAILED":
            status = "FAILED"
        out.append([
            r["scenario"], str(r["messages"]), r["load"], _num(r.get("throughput"), 0),
            _num(r.get("ratio"), 2),
            *(_num(latency.get(k)) + unit for k in ("p50", "p95", "p99", "max")),
            _num(http.get("p50")), _num(http.get("p99")), rss or "-", status])
    return out


def render(results: list[dict[str, Any]]) -> str:
    table = [list(COLUMNS), *rows(results)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(widths[i]) if i in (0, 2, 11, 12) else cell.rjust(widths[i])
                       for i, cell in enumerate(row)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    seen: set[str] = set()
    for r in results:
        cpu = (r.get("extra") or {}).get("cpu_ms_per_message")
        # A scenario's second line (router-service's customer line) is told by its load.
        name = r["scenario"] + (f" [{r['load']}]" if r["scenario"] in seen else "")
        seen.add(r["scenario"])
        if cpu:
            lines.append(f"CPU ms per message, {name}: " + ", ".join(
                f"{name} {value:.2f}" for name, value in cpu.items()))
    lines.append("latency: request → persisted in ms (raw: publish → confirm; router-decision: "
                 "per decision in µs); http: request → HTTP answer in ms; "
                 "×hop: throughput / the raw hop")
    return "\n".join(lines)


def figures(report: dict[str, Any]) -> dict[str, float]:
    """Every numeric figure of a run, flattened: `<scenario>[<load>].<path>` → value."""
    flat: dict[str, float] = {}
    seen: set[str] = set()
    for r in report.get("results", []):
        # router-decision's rows, and a scenario's second line, are told apart by their load.
        key = r["scenario"] + (f"[{r['load']}]" if r["scenario"] == "router-decision"
                               or r["scenario"] in seen else "")
        seen.add(r["scenario"])
        for field in ("throughput", "ratio"):
            if isinstance(r.get(field), int | float):
                flat[f"{key}.{field}"] = float(r[field])
        for group in ("latency", "http", "rss_mb"):
            for name, value in (r.get(group) or {}).items():
                if isinstance(value, int | float) and name not in ("count", "mean"):
                    flat[f"{key}.{group}.{name}"] = float(value)
        for name in ("publish_per_s", "consume_per_s", "knee_rate", "accepted_per_s"):
            value = (r.get("extra") or {}).get(name)
            if isinstance(value, int | float):
                flat[f"{key}.{name}"] = float(value)
        for name, value in ((r.get("extra") or {}).get("cpu_ms_per_message") or {}).items():
            if isinstance(value, int | float):
                flat[f"{key}.cpu_ms.{name}"] = float(value)
    return flat


def compare(current: dict[str, Any], baseline: dict[str, Any]) -> str:
    now, before = figures(current), figures(baseline)
    names = [name for name in now if name in before]
    if not names:
        return "baseline: no figure in common"
    width = max(len(n) for n in names)
    lines = [f"{'figure'.ljust(width)}  {'this run':>12}  {'baseline':>12}  {'change':>8}",
             "-" * (width + 38)]
    for name in names:
        a, b = now[name], before[name]
        change = "-" if b == 0 else f"{(a - b) / abs(b) * 100:+.1f}%"
        lines.append(f"{name.ljust(width)}  {_num(a):>12}  {_num(b):>12}  {change:>8}")
    lines.append(f"(baseline: {baseline.get('started_at')} on "
                 f"{(baseline.get('machine') or {}).get('cpu_model')}, "
                 f"{(baseline.get('settings') or {}).get('db')})")
    return "\n".join(lines)
