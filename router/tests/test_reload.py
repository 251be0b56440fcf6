"""Hot reload: a valid change is swapped in, an invalid one refused with the old rules kept."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from intake.errors import ConfigInvalid
from intake.settings import IntakeSettings
from router.reload import RulesHolder

from .conftest import make_message, rules_text

SALES = "- id: r\n  match: {channel: webform}\n  desk: sales"
AFTERSALES = "- id: r\n  match: {channel: webform}\n  desk: aftersales"


def test_valid_change_is_swapped_in(write_rules: Callable[..., Path]) -> None:
    path = write_rules(SALES)
    holder = RulesHolder(path)
    first = holder.load()
    assert holder.current.decide(make_message()).deliveries[0].desk == "sales"
    assert holder.check() is False  # nothing changed

    path.write_text(rules_text(AFTERSALES), encoding="utf-8")
    with capture_logs() as logs:
        assert holder.check() is True
    assert holder.current.revision == hashlib.sha256(path.read_bytes()).hexdigest()
    assert holder.current.revision != first.revision
    assert holder.current.decide(make_message()).deliveries[0].desk == "aftersales"
    assert holder.last_error is None
    assert [(e["event"], e["old_revision"], e["new_revision"]) for e in logs] == [
        ("rules_reloaded", first.revision, holder.current.revision)]


def test_invalid_change_is_refused_and_old_rules_stay(write_rules: Callable[..., Path]) -> None:
    path = write_rules(SALES)
    holder = RulesHolder(path)
    first = holder.load()

    path.write_text(rules_text("- id: r\n  desk: nowhere"), encoding="utf-8")
    with capture_logs() as logs:
        assert holder.check() is False
        assert holder.check() is False  # the same bad content is logged once
    assert holder.current is first
    assert holder.last_error is not None
    assert "routes.0.desk: unknown desk 'nowhere'" in holder.last_error[0]
    assert [e["event"] for e in logs] == ["rules_refused"]
    assert logs[0]["revision_in_force"] == first.revision
    assert logs[0]["problems"] == holder.last_error

    path.write_text("desks: [oops", encoding="utf-8")  # YAML syntax error
    assert holder.check() is False
    assert holder.last_error is not None and "YAML syntax" in holder.last_error[0]

    path.write_text(rules_text(AFTERSALES), encoding="utf-8")  # fixed
    assert holder.check() is True
    assert holder.last_error is None
    assert holder.current.decide(make_message()).deliveries[0].desk == "aftersales"


def test_missing_file_is_refused_and_old_rules_stay(write_rules: Callable[..., Path]) -> None:
    path = write_rules(SALES)
    holder = RulesHolder(path)
    first = holder.load()
    path.unlink()
    assert holder.check() is False
    assert holder.current is first
    assert holder.last_error is not None and "cannot read" in holder.last_error[0]


def test_undoing_a_bad_edit_clears_the_error(write_rules: Callable[..., Path]) -> None:
    path = write_rules(SALES)
    holder = RulesHolder(path)
    holder.load()
    good = path.read_bytes()
    path.write_text("default_route: {}", encoding="utf-8")
    holder.check()
    assert holder.last_error
    path.write_bytes(good)
    assert holder.check() is False  # same revision as in force: nothing to swap
    assert holder.last_error is None


def test_load_refuses_a_bad_config_at_start(write_rules: Callable[..., Path]) -> None:
    holder = RulesHolder(write_rules("- id: r\n  desk: nowhere"))
    with pytest.raises(ConfigInvalid):
        holder.load()
    with pytest.raises(RuntimeError):
        _ = holder.current


def test_rules_file_overrides_the_config_and_gives_the_revision(
        tmp_path: Path, write_rules: Callable[..., Path]) -> None:
    config = tmp_path / "intake.yaml"
    config.write_text("channels: {}\ndesks: [{id: old, name: Old}]\n"
                      "default_route: {desk: old}\n", encoding="utf-8")
    rules_path = write_rules(SALES, name="routing.yaml")
    holder = RulesHolder.from_settings(IntakeSettings(config=config, rules=rules_path))
    rules = holder.load()
    assert rules.revision == hashlib.sha256(rules_path.read_bytes()).hexdigest()
    assert rules.source == str(rules_path)
    assert rules.decide(make_message(channel="email", idempotency_key="email:a:b")
                        ).deliveries[0].desk == "general"

    config.write_text("channels: {}\n# a comment\n", encoding="utf-8")
    assert holder.check() is False  # the config changed, the routing sections did not
    assert holder.current is rules


async def test_watch_picks_up_a_change(write_rules: Callable[..., Path]) -> None:
    path = write_rules(SALES)
    holder = RulesHolder(path)
    holder.load()
    task = asyncio.create_task(holder.watch(interval_s=0.01))
    try:
        path.write_text(rules_text(AFTERSALES), encoding="utf-8")
        for _ in range(200):
            await asyncio.sleep(0.01)
            if holder.current.decide(make_message()).deliveries[0].desk == "aftersales":
                break
        assert holder.current.decide(make_message()).deliveries[0].desk == "aftersales"
    finally:
        task.cancel()


@pytest.mark.parametrize("bad", [
    "desks: [oops",  # a YAML error
    "- id: r\n  desk: nowhere",  # an unknown desk
    "- id: r\n  priorty: high\n  desk: sales",  # an unknown key
    "- id: r\n  when: \"text contains\"\n  desk: sales",  # a `when` that does not parse
    "- id: r\n  when: \"text matches '(a)\\\\1'\"\n  desk: sales",  # a pattern RE2 cannot run
    "- id: r\n  desk: sales\n- id: s\n  desk: aftersales",  # a shadowed route
    "- id: r\n  desk: sales\n  tests: [{message: {}, expect: {route: s}}]",  # a failing test
])
def test_each_kind_of_bad_file_is_refused(write_rules: Callable[..., Path], bad: str) -> None:
    path = write_rules(SALES)
    holder = RulesHolder(path)
    first = holder.load()
    path.write_text(rules_text(bad) if not bad.startswith("desks") else bad, encoding="utf-8")
    assert holder.check() is False
    assert holder.current is first and holder.last_error


def test_a_file_written_in_two_halves_is_taken_when_whole(
        write_rules: Callable[..., Path]) -> None:
    path = write_rules(SALES)
    holder = RulesHolder(path)
    first = holder.load()
    whole = rules_text(AFTERSALES)
    path.write_text(whole[: len(whole) // 2], encoding="utf-8")  # the editor's first write
    assert holder.check() is False
    assert holder.current is first and holder.last_error
    path.write_text(whole, encoding="utf-8")
    assert holder.check() is True and holder.last_error is None
    assert holder.current.decide(make_message()).deliveries[0].desk == "aftersales"
