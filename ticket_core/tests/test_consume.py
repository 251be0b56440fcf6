"""The routed-message consumer: impossible values are dead-lettered at once; the crash hook."""

from __future__ import annotations

import pytest

from intake import Rejected
from ticket_core.consume import crash_probability, persist_routed
from ticket_core.store import TicketStore

from .builders import message, route


# SQLite does not enforce VARCHAR lengths; PostgreSQL does.
@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_value_over_a_column_limit_is_rejected_as_unpersistable(
        store: TicketStore) -> None:
    persist = persist_routed(store)
    # Valid for the model, but the desk column holds 128 characters (a misconfigured router).
    poison = message("too-long", routed=route(desk="d" * 300))
    with pytest.raises(Rejected) as caught:
        await persist([poison])
    assert caught.value.reason == "unpersistable"
    # The same message cut to size goes in: the repaired replay works.
    await persist([poison.model_copy(update={"route": route(desk="general")})])
    stored = await store.list_tickets()
    assert len(stored.items) == 1


def test_crash_hook_is_off_unless_asked_for() -> None:
    assert crash_probability(None) == 0.0
    assert crash_probability("") == 0.0
    assert crash_probability("something_else:0.5") == 0.0
    assert crash_probability("crash_after_commit:0.01") == 0.01
    assert crash_probability("crash_after_commit") == 1.0


async def test_unset_hook_lets_the_batch_return(store: TicketStore) -> None:
    persist = persist_routed(store, None)
    await persist([message("a", routed=route()),
                   message("b", routed=route(), email="b@example.cn")])
    assert len((await store.list_tickets()).items) == 2


def _end_to_end(channel: str) -> tuple[float, float]:
    from intake.metrics import END_TO_END_SECONDS

    histogram = END_TO_END_SECONDS.labels("ticket-core", channel)
    return histogram._sum.get(), sum(bucket.get() for bucket in histogram._buckets)


async def test_end_to_end_latency_is_observed_once_per_stored_message(
        store: TicketStore) -> None:
    from datetime import timedelta

    from intake.message import utcnow

    persist = persist_routed(store, None)
    sum_before, count_before = _end_to_end("email")
    three_seconds_ago = utcnow() - timedelta(seconds=3)
    first = message("late", channel="email", routed=route(), received_at=three_seconds_ago)
    await persist([first])
    await persist([first])  # a redelivery is a duplicate: its latency is not counted again
    sum_after, count_after = _end_to_end("email")
    assert count_after == count_before + 1
    assert 3.0 <= sum_after - sum_before < 60.0
