"""Traffic through a connector: send, read `persisted_at` back, check exactly-once, summarise.

A connector's scenario module defines a `ConnectorLoad` (how to send message i with a given
idempotency-key suffix, and which key prefix the gateway stores it under) and gets the closed
loop, the open loop and the rate sweep from `connector_scenarios`. The mixed scenario drives
every load at once, each with its weight.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .check import ExactlyOnceFailed, check_exactly_once, read_persisted, wait_stored
from .load import LoopStats, closed_loop, open_loop
from .result import Context, Result, Scenario
from .stats import summarize


class ConnectorLoad(Protocol):
    channel: str  # the connector's name (`intake run <channel>`)
    weight: float  # its share of the mixed scenario

    def key_prefix(self, tag: str) -> str:
        """The idempotency-key prefix of every message sent with this tag."""
        ...

    async def send(self, ctx: Context, tag: str, i: int) -> bool:
        """Send message i; True once the gateway acknowledged it (durable)."""
        ...


@dataclass
class Sent:
    key: str
    scheduled: float  # wall clock the request was due (open loop) or started (closed loop)
    answered: float | None = None
    ok: bool = False
    error: str | None = None


@dataclass
class Traffic:
    loads: Sequence[ConnectorLoad]
    tag: str
    sent: dict[int, Sent] = field(default_factory=dict)

    def pick(self, i: int) -> ConnectorLoad:
        """Deterministic weighted interleaving: load k gets weight_k of every stretch."""
        if len(self.loads) == 1:
            return self.loads[0]
        total = sum(load.weight for load in self.loads)
        position = (i * 0.6180339887) % 1.0 * total  # low-discrepancy, evenly spread
        for load in self.loads:
            position -= load.weight
            if position < 0:
                return load
        return self.loads[-1]

    async def send(self, ctx: Context, i: int, scheduled: float) -> None:
        load = self.pick(i)
        record = Sent(key=f"{load.key_prefix(self.tag)}{i}", scheduled=scheduled)
        self.sent[i] = record
        try:
            record.ok = await load.send(ctx, self.tag, i)
        except Exception as exc:
            record.error = repr(exc)[:200]
        record.answered = time.time()


def latency_timeline(points: Sequence[tuple[float, float]],
                     window_s: float = 1.0) -> list[dict[str, float]]:
    """Request → persisted per window of send time: when in the run the tail happened."""
    if not points:
        return []
    start = min(t for t, _ in points)
    windows: dict[int, list[float]] = {}
    for sent, ms in points:
        windows.setdefault(int((sent - start) / window_s), []).append(ms)
    out = []
    for index in sorted(windows):
        figures = summarize(windows[index])
        out.append({"t": index * window_s, "n": len(windows[index]), "p50": figures["p50"],
                    "p99": figures["p99"], "max": figures["max"]})
    return out


async def drive(ctx: Context, loads: Sequence[ConnectorLoad], tag: str, n: int, *,
                rate: float | None = None, concurrency: int | None = None,
                scenario: str, load_label: str, raise_on_loss: bool = True) -> Result:
    """Run one load shape, then read back, check and summarise it."""
    ctx.rss.reset()
    traffic = Traffic(loads, tag)
    # A collection in this process would pause sending, and the pause would count as the
    # gateway's latency: what exists now is frozen, and nothing is collected until the end.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        if rate is not None:
            stats = await open_loop(lambda i, due: traffic.send(ctx, i, due), n, rate)
        else:
            stats = await closed_loop(lambda i, due: traffic.send(ctx, i, due), n,
                                      concurrency or ctx.options.concurrency)
    finally:
        gc.enable()
    return await settle(ctx, traffic, stats, scenario=scenario, load_label=load_label,
                        raise_on_loss=raise_on_loss)


async def settle(ctx: Context, traffic: Traffic, stats: LoopStats, *, scenario: str,
                 load_label: str, raise_on_loss: bool) -> Result:
    acked = [s.key for s in traffic.sent.values() if s.ok]
    failed = [s.key for s in traffic.sent.values() if not s.ok]
    stored_rows = []
    for load in traffic.loads:
        prefix = load.key_prefix(traffic.tag)
        expected = sum(1 for s in traffic.sent.values() if s.ok and s.key.startswith(prefix))
        await wait_stored(ctx.engine, prefix, expected, stall_s=ctx.options.stall_s)
        rows = await read_persisted(ctx.engine, prefix)
        sent_key = getattr(load, "sent_key", None)  # a key with more than the sent id (email)
        if sent_key is not None:
            rows = [dataclasses.replace(row, key=sent_key(row.key)) for row in rows]
        stored_rows.extend(rows)
    rss = ctx.rss.peaks()
    cpu = ctx.rss.cpu_ms_per_message(len(traffic.sent))
    check = check_exactly_once(acked, failed, [row.key for row in stored_rows])
    by_key = {s.key: s for s in traffic.sent.values()}
    persisted_ms = [(row.persisted_at.timestamp() - by_key[row.key].scheduled) * 1000
                    for row in stored_rows if row.key in by_key]
    http_ms = [(s.answered - s.scheduled) * 1000 for s in traffic.sent.values()
               if s.ok and s.answered is not None]
    timeline = latency_timeline([(by_key[row.key].scheduled, ms) for row, ms in zip(
        (r for r in stored_rows if r.key in by_key), persisted_ms, strict=True)])
    last = max((row.persisted_at.timestamp() for row in stored_rows), default=stats.finished)
    elapsed = max(last - stats.started, 1e-9)
    throughput = round(len(stored_rows) / elapsed, 1)
    errors = sorted({s.error or "refused" for s in traffic.sent.values() if not s.ok})
    result = Result(
        scenario=scenario, messages=len(traffic.sent), load=load_label, throughput=throughput,
        latency=summarize(persisted_ms), http=summarize(http_ms), rss_mb=rss,
        ratio=ctx.ratio(throughput), check=check.as_dict(),
        extra={"accepted_per_s": round(len(acked) / max(stats.finished - stats.started, 1e-9),
                                       1),
               "failed_requests": len(failed), "errors": errors[:5],
               "max_send_lag_ms": round(stats.max_lag_s * 1000, 1),
               "seconds": round(elapsed, 2), "cpu_ms_per_message": cpu,
               "timeline": timeline})
    # One clock serves both sides: a message persisted before it was sent means its key was
    # stored by an earlier run, and its latency would be a lie.
    early = sum(1 for ms in persisted_ms if ms < -5.0)
    if early:
        result.ok = False
        result.failure = f"{early} messages were persisted before they were sent (keys reused)"
        raise ExactlyOnceFailed(f"{scenario}: {result.failure}", result)
    if not check.ok or (failed and raise_on_loss):
        result.ok = False
        result.failure = (f"exactly-once check failed: {check.describe()}" if not check.ok
                          else f"{len(failed)} requests failed: {errors[:3]}")
        if raise_on_loss or not check.ok:
            raise ExactlyOnceFailed(f"{scenario}: {result.failure}", result)
    return result


# -- the three shapes every connector gets -------------------------------------------------


class ClosedLoop(Scenario):
    order = 40

    def __init__(self, load: ConnectorLoad) -> None:
        self.load = load
        self.name = f"{load.channel}-closed"

    async def run(self, ctx: Context) -> list[Result]:
        n = ctx.n(10000, 150)
        c = ctx.options.concurrency
        ctx.log(f"{self.name}: {n} messages from {c} concurrent clients")
        return [await drive(ctx, [self.load], "closed", n, concurrency=c,
                            scenario=self.name, load_label=f"C={c}")]


class OpenLoop(Scenario):
    order = 50

    def __init__(self, load: ConnectorLoad) -> None:
        self.load = load
        self.name = f"{load.channel}-open"

    async def run(self, ctx: Context) -> list[Result]:
        rate = ctx.open_rate()
        n = ctx.open_n(rate)
        ctx.log(f"{self.name}: {n} messages at {rate:g}/s")
        return [await drive(ctx, [self.load], "open", n, rate=rate, scenario=self.name,
                            load_label=f"{rate:g}/s")]


class Sweep(Scenario):
    """Rates rising ×1.4 each step until p99 request → persisted passes the bound twice."""

    order = 60

    def __init__(self, load: ConnectorLoad) -> None:
        self.load = load
        self.name = f"{load.channel}-sweep"

    async def run(self, ctx: Context) -> list[Result]:
        bound = ctx.options.knee_p99_ms
        step_s = 0.5 if ctx.options.quick else ctx.options.sweep_step_s
        base = ctx.base_rate()
        # Geometric steps (×1.4) from 2 % of the hop; the first that does not hold ends it.
        fractions = [0.1, 0.2] if ctx.options.quick else [
            round(0.02 * 1.4 ** k, 4) for k in range(13)]
        steps: list[dict[str, object]] = []
        knee: Result | None = None
        first: Result | None = None
        first_fail: float | None = None
        for fraction in fractions:
            rate = round(fraction * base, 1)
            # Every step its own tag (the count so far): a repeated step must not reuse keys.
            result = await self._step(ctx, len(steps), rate, step_s, steps, bound)
            if not result.ok and not ctx.options.quick:
                # One stall (a checkpoint, a neighbour on the host) must not set the knee:
                # a rate fails only if it fails twice running.
                await ctx.rss.wait_quiet()
                result = await self._step(ctx, len(steps), rate, step_s, steps, bound)
            first = first or result
            if result.ok:
                knee = result
            else:
                first_fail = rate
                break
        if knee is not None and first_fail is not None and not ctx.options.quick:
            # One bisection between the last rate that held and the first that did not.
            rate = round((float(knee.load.rstrip("/s")) + first_fail) / 2, 1)
            result = await self._step(ctx, len(steps), rate, step_s, steps, bound)
            if result.ok:
                knee = result
        messages = sum(int(s["messages"]) for s in steps)  # type: ignore[call-overload]
        if knee is None:
            # Even the lowest rate was over the bound: report that step's figures, no knee.
            assert first is not None
            first.scenario, first.messages, first.ok = self.name, messages, True
            first.load = f"none held ({first.load})"
            first.extra = {"steps": steps, "knee_rate": None, "p99_bound_ms": bound}
            return [first]
        knee_rate = float(knee.load.rstrip("/s"))
        knee.scenario = self.name
        knee.messages = messages
        knee.load = f"knee {knee_rate:g}/s"
        knee.extra = {"steps": steps, "knee_rate": knee_rate, "p99_bound_ms": bound,
                      "knee_ratio_to_hop": ctx.ratio(knee_rate)}
        knee.throughput = knee_rate
        knee.ratio = ctx.ratio(knee_rate)
        return [knee]

    async def _step(self, ctx: Context, k: int, rate: float, step_s: float,
                    steps: list[dict[str, object]], bound: float) -> Result:
        n = max(10, int(rate * step_s))
        result = await drive(ctx, [self.load], f"sweep{k}", n, rate=rate, scenario=self.name,
                             load_label=f"{rate:g}/s", raise_on_loss=False)
        p99 = (result.latency or {}).get("p99")
        held = result.ok and p99 is not None and p99 <= bound
        steps.append({"rate": rate, "messages": n, "p99_ms": p99,
                      "p50_ms": (result.latency or {}).get("p50"),
                      "throughput": result.throughput, "held": held,
                      "failed_requests": result.extra.get("failed_requests")})
        ctx.log(f"{self.name}: {rate:g}/s → p99 {p99} ms ({'held' if held else 'over'})")
        result.ok = held
        if not held:
            # Let the backlog drain so the next scenario starts from an idle gateway.
            await asyncio.sleep(0.5)
        return result


def connector_scenarios(load: ConnectorLoad) -> list[Scenario]:
    return [ClosedLoop(load), OpenLoop(load), Sweep(load)]
