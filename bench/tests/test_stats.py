"""Percentiles by nearest rank, and the summary every row of the table is made of."""

from __future__ import annotations

import math
import random

import pytest

from bench.stats import percentile, summarize


def test_percentiles_of_one_to_a_hundred_are_their_ranks() -> None:
    values = list(range(1, 101))
    random.Random(4).shuffle(values)
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1


def test_percentile_is_an_observed_value_never_an_interpolation() -> None:
    assert percentile([1.0, 10.0], 50) == 1.0
    assert percentile([1.0, 10.0], 51) == 10.0
    assert percentile([3.0, 1.0, 2.0], 99) == 3.0


def test_p99_of_a_thousand_ignores_only_the_ten_worst() -> None:
    values = [1.0] * 990 + [1000.0] * 10
    assert percentile(values, 99) == 1.0
    values = [1.0] * 989 + [1000.0] * 11
    assert percentile(values, 99) == 1000.0


def test_single_value_is_every_percentile() -> None:
    assert {percentile([7.5], q) for q in (0, 50, 99, 100)} == {7.5}


def test_no_values_give_nan_and_a_wrong_quantile_is_refused() -> None:
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_reports_count_percentiles_max_and_mean() -> None:
    summary = summarize([float(v) for v in range(1, 201)])
    assert summary == {"count": 200, "p50": 100.0, "p95": 190.0, "p99": 198.0,
                       "max": 200.0, "mean": 100.5}
    assert summarize([])["count"] == 0


def test_the_latency_timeline_groups_by_send_second() -> None:
    from bench.traffic import latency_timeline

    points = [(100.0, 10.0), (100.5, 30.0), (101.2, 200.0), (103.9, 5.0)]
    timeline = latency_timeline(points)
    assert [w["t"] for w in timeline] == [0.0, 1.0, 3.0]
    assert [w["n"] for w in timeline] == [2, 1, 1]
    assert timeline[0]["max"] == 30.0 and timeline[1]["p99"] == 200.0
    assert latency_timeline([]) == []
