"""Percentiles and the summary every scenario reports (p50/p95/p99/max)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 ≤ q ≤ 100) by the nearest-rank method; nan for no values.

    Nearest rank returns an observed value (never an interpolation between two), so the p99 of
    100 samples is the 99th smallest and the p100 is the max.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def summarize(values: Sequence[float], digits: int = 3) -> dict[str, float | int]:
    """count, p50, p95, p99, max and mean of the values (in their own unit)."""
    if not values:
        return {"count": 0, "p50": math.nan, "p95": math.nan, "p99": math.nan,
                "max": math.nan, "mean": math.nan}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50": round(percentile(ordered, 50), digits),
        "p95": round(percentile(ordered, 95), digits),
        "p99": round(percentile(ordered, 99), digits),
        "max": round(float(ordered[-1]), digits),
        "mean": round(sum(ordered) / len(ordered), digits),
    }
