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
