"""The exactly-once check: lost, doubled or foreign keys fail a scenario loudly."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.check import ExactlyOnceFailed, check_exactly_once, read_persisted, wait_stored
from bench.load import LoopStats
from bench.report import compare, render
from bench.result import Options, Result
from bench.traffic import Sent, Traffic, settle


def test_every_acknowledged_key_stored_once_passes() -> None:
    result = check_exactly_once(["a", "b", "c"], [], ["c", "a", "b"])
    assert result.ok
    assert (result.sent, result.acknowledged, result.stored) == (3, 3, 3)


def test_a_lost_message_fails() -> None:
    result = check_exactly_once(["a", "b", "c"], [], ["a", "c"])
    assert not result.ok
    assert result.missing == ["b"]
    assert "1 missing" in result.describe()


def test_a_doubled_message_fails() -> None:
    result = check_exactly_once(["a", "b"], [], ["a", "b", "b"])
    assert not result.ok
    assert result.duplicated == ["b"]


def test_a_stored_key_that_was_never_sent_fails() -> None:
    result = check_exactly_once(["a"], [], ["a", "zz"])
    assert not result.ok
    assert result.unexpected == ["zz"]


def test_a_failed_request_may_be_stored_once_or_not_at_all() -> None:
    assert check_exactly_once(["a"], ["b"], ["a", "b"]).ok
    assert check_exactly_once(["a"], ["b"], ["a"]).ok
    assert not check_exactly_once(["a"], ["b"], ["a", "b", "b"]).ok


class FakeLoad:
    channel = "webform"

    def __init__(self, weight: float = 1.0, prefix: str = "webform:contact:bench-") -> None:
        self.weight = weight
        self.prefix = prefix

    def key_prefix(self, tag: str) -> str:
        return f"{self.prefix}{tag}-"

    async def send(self, ctx: object, tag: str, i: int) -> bool:
        return True


def test_mixed_traffic_gives_each_connector_its_share() -> None:
    a, b = FakeLoad(3.0, "a:"), FakeLoad(1.0, "b:")
    traffic = Traffic([a, b], "mixed")
    counts = Counter(traffic.pick(i).prefix for i in range(4000))
    assert abs(counts["a:"] / 4000 - 0.75) < 0.01


@pytest.fixture
async def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    from ticket_core.db import make_engine, migrate

    url = f"sqlite+aiosqlite:///{tmp_path}/intake.sqlite3"
    await migrate(url)
    engine = make_engine(url)
    yield engine
    await engine.dispose()


async def insert(engine, keys: list[str], persisted_at: datetime) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import insert as sql_insert

    from ticket_core.db import Customer
    from ticket_core.db import Message as Row

    async with engine.begin() as connection:
        await connection.execute(sql_insert(Customer), [
            {"id": "c1", "name": "x", "created_at": persisted_at, "updated_at": persisted_at}])
        await connection.execute(sql_insert(Row), [{
            "id": f"m{i}", "customer_id": "c1", "direction": "in", "kind": "form_submission",
            "channel": "webform", "account": "contact", "text": "", "flags": [],
            "idempotency_key": key, "received_at": persisted_at, "persisted_at": persisted_at}
            for i, key in enumerate(keys)])


async def test_read_back_finds_only_the_scenarios_keys_even_with_like_wildcards(engine) -> None:  # type: ignore[no-untyped-def]
    at = datetime(2026, 1, 1, tzinfo=UTC)
    await insert(engine, ["webform:contact:bench-open-1", "webform:contact:bench-open-2",
                          "webform:contact:bench-openx-1", "webform:contact:bench_open-3"], at)
    rows = await read_persisted(engine, "webform:contact:bench-open-")
    assert sorted(r.key for r in rows) == ["webform:contact:bench-open-1",
                                           "webform:contact:bench-open-2"]
    assert rows[0].persisted_at == at
    assert await wait_stored(engine, "webform:contact:bench-open-", 2) == 2
    assert await wait_stored(engine, "webform:contact:bench-open-", 3, stall_s=0.3) == 2


class FakeRss:
    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def peaks(self) -> dict[str, float]:
        return {"webform": 80.0}

    def cpu_ms_per_message(self, messages: int) -> dict[str, float]:
        return {"webform": 0.5, "total": 0.5}


class FakeContext:
    def __init__(self, engine) -> None:  # type: ignore[no-untyped-def]
        self.engine = engine
        self.rss = FakeRss()
        self.options = Options(scenarios=["all"], stall_s=0.3)
        self.hop = 1000.0

    def ratio(self, throughput: float | None) -> float | None:
        return None if throughput is None else throughput / self.hop


async def test_settle_measures_request_to_persisted_and_fails_on_a_lost_message(engine) -> None:  # type: ignore[no-untyped-def]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    traffic = Traffic([FakeLoad()], "t")
    for i in range(3):
        traffic.sent[i] = Sent(key=f"webform:contact:bench-t-{i}",
                               scheduled=start.timestamp() + i * 0.01,
                               answered=start.timestamp() + i * 0.01 + 0.002, ok=True)
    await insert(engine, [f"webform:contact:bench-t-{i}" for i in range(2)],
                 start + timedelta(milliseconds=25))
    stats = LoopStats(started=start.timestamp(), finished=start.timestamp() + 0.03)
    ctx = FakeContext(engine)
    with pytest.raises(ExactlyOnceFailed) as failure:
        await settle(ctx, traffic, stats, scenario="webform-closed",  # type: ignore[arg-type]
                     load_label="C=1", raise_on_loss=True)
    assert "1 missing" in str(failure.value)
    result: Result = failure.value.args[1]
    assert not result.ok and result.check and not result.check["ok"]
    # Stored 25 ms after the first request was due and 15 ms after the second.
    assert result.latency and result.latency["count"] == 2
    assert result.latency["p50"] == pytest.approx(15.0, abs=0.01)
    assert result.latency["max"] == pytest.approx(25.0, abs=0.01)
    assert result.http and result.http["p50"] == pytest.approx(2.0, abs=0.01)
    # The failed row is in the table as FAILED.
    assert "FAILED" in render([result.as_dict()])


async def test_a_key_stored_before_it_was_sent_fails_the_scenario(engine) -> None:  # type: ignore[no-untyped-def]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    traffic = Traffic([FakeLoad()], "t")
    traffic.sent[0] = Sent(key="webform:contact:bench-t-0", scheduled=start.timestamp(),
                           answered=start.timestamp() + 0.002, ok=True)
    # An earlier run with the same tag left this key, stored a second before this send.
    await insert(engine, ["webform:contact:bench-t-0"], start - timedelta(seconds=1))
    stats = LoopStats(started=start.timestamp(), finished=start.timestamp() + 0.01)
    with pytest.raises(ExactlyOnceFailed, match="persisted before they were sent"):
        await settle(FakeContext(engine), traffic, stats,  # type: ignore[arg-type]
                     scenario="webform-sweep", load_label="10/s", raise_on_loss=False)


def test_baseline_comparison_shows_the_change_in_per_cent() -> None:
    def run(throughput: float, p99: float) -> dict[str, object]:
        return {"results": [Result(scenario="webform-closed", messages=10, load="C=1",
                                   throughput=throughput, latency={"p50": 1.0, "p99": p99},
                                   extra={"cpu_ms_per_message": {"webform": p99 / 40}}
                                   ).as_dict()]}

    text = compare(run(110.0, 20.0), run(100.0, 40.0))
    assert "webform-closed.throughput" in text and "+10.0%" in text
    assert "webform-closed.latency.p99" in text and "-50.0%" in text
    assert "webform-closed.cpu_ms.webform" in text


def test_cpu_time_of_a_process_is_read_from_proc() -> None:
    import os
    import time

    from bench.gateway import read_cpu_s

    before = read_cpu_s(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:  # burn 50 ms of CPU
        pass
    after = read_cpu_s(os.getpid())
    assert before is not None and after is not None
    assert after - before >= 0.03
    assert read_cpu_s(2**22 + 7) is None  # no such process


async def test_the_local_brokers_log_is_rolled_over_before_a_scenario() -> None:
    import shutil

    from bench.gateway import broker_pid, roll_broker_log

    if shutil.which("rabbitmqctl") is None or broker_pid() is None:
        pytest.skip("no local RabbitMQ node with rabbitmqctl")
    assert await roll_broker_log()
    assert await roll_broker_log()  # a fresh log rolls over again without complaint


def test_a_scenarios_second_line_keeps_figures_of_its_own() -> None:
    """router-service's customer line is not folded into its first line's figures."""
    from bench.report import figures

    flat = figures({"results": [
        {"scenario": "router-service", "load": "pre-filled queue", "throughput": 100.0,
         "ratio": 1.0},
        {"scenario": "router-service", "load": "rules reading customer.*, warm lookup cache",
         "throughput": 50.0, "ratio": 0.5}]})
    assert flat["router-service.throughput"] == 100.0
    assert flat["router-service[rules reading customer.*, warm lookup cache].ratio"] == 0.5
