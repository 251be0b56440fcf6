"""Settings: the README's generated table, the fault hook's guard, paths that must exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from intake.errors import SettingInvalid
from intake.settings import IntakeSettings, settings_problems
from intake.settings_table import BEGIN, END, README, markdown, readme_block, rewrite_readme


def test_the_readme_settings_table_is_current() -> None:
    # Stale? `make settings` rewrites it from the models.
    assert readme_block(README.read_text(encoding="utf-8")) == markdown()


def test_the_table_lists_every_variable_the_services_read() -> None:
    table = markdown()
    for variable in ("INTAKE_HOST", "INTAKE_AMQP_URL", "INTAKE_FAULT", "INTAKE_TEST_HARNESS",
                     "INTAKE_ROUTER_PREFETCH", "INTAKE_ROUTER_RELOAD_INTERVAL_S",
                     "INTAKE_TICKET_CORE_PREFETCH", "INTAKE_TICKET_CORE_MIGRATE_ON_START",
                     "INTAKE_WEBFORM_PORT"):
        assert f"| `{variable}` |" in table
    host = next(line for line in table.splitlines() if "`INTAKE_HOST`" in line)
    assert "0.0.0.0" in host and "`127.0.0.1`" in host
    # The router's reload interval has its meaning from the comment above the field.
    reload = next(line for line in table.splitlines() if "RELOAD_INTERVAL_S" in line)
    assert "How often the rules file is checked" in reload


def test_a_stale_table_is_rewritten_between_the_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{BEGIN}\n| old | table |\n{END}\n\nafter\n", encoding="utf-8")
    assert readme_block(readme.read_text()) != markdown()
    assert rewrite_readme(readme) is True
    text = readme.read_text()
    assert readme_block(text) == markdown() and text.endswith("\n\nafter\n")
    assert rewrite_readme(readme) is False


def test_the_fault_hook_needs_the_test_harness() -> None:
    with pytest.raises(ValidationError) as caught:
        IntakeSettings(fault="crash_after_commit:3")
    [problem] = settings_problems(caught.value)
    assert "INTAKE_FAULT is set but INTAKE_TEST_HARNESS is not" in problem
    assert IntakeSettings(fault="crash_after_commit:3", test_harness=True).fault


def test_a_missing_relative_config_is_an_error_naming_its_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingInvalid, match=r"^INTAKE_CONFIG: mine.yaml does not exist"):
        _ = IntakeSettings(config=Path("mine.yaml")).config_path
    with pytest.raises(SettingInvalid, match=r"^INTAKE_RULES: rules.yaml does not exist"):
        _ = IntakeSettings(rules=Path("rules.yaml")).rules_path
    (tmp_path / "mine.yaml").write_text("{}")
    assert IntakeSettings(config=Path("mine.yaml")).config_path == Path("mine.yaml")
    # The shipped example is still found from another working directory.
    assert IntakeSettings().config_path.is_file()


def test_a_bad_value_of_a_service_setting_names_its_variable() -> None:
    from router.settings import RouterSettings

    with pytest.raises(ValidationError) as caught:
        RouterSettings(pipeline=0)
    [problem] = settings_problems(caught.value)
    assert problem.startswith("INTAKE_ROUTER_PIPELINE: ")


def test_a_plain_postgresql_uri_runs_with_asyncpg() -> None:
    # CloudNativePG's `<cluster>-app` Secret holds `uri` as postgresql://user:pass@host:5432/db.
    for given in ("postgresql://app:s3cret@pg-rw:5432/app", "postgres://app:s3cret@pg-rw/app"):
        url = IntakeSettings(database_url=given).effective_database_url
        assert url.startswith("postgresql+asyncpg://app:s3cret@pg-rw")
    explicit = "postgresql+asyncpg://app@pg-rw/app"
    assert IntakeSettings(database_url=explicit).effective_database_url == explicit
    assert IntakeSettings().effective_database_url.startswith("sqlite+aiosqlite:///")


def test_the_instance_id_defaults_to_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.delenv("INTAKE_INSTANCE_ID", raising=False)
    assert IntakeSettings().instance == socket.gethostname()
    monkeypatch.setenv("INTAKE_INSTANCE_ID", "webform-2")
    assert IntakeSettings().instance == "webform-2"
    monkeypatch.setenv("INTAKE_INSTANCE_ID", "../escape")
    with pytest.raises(ValidationError):
        IntakeSettings()


def test_cluster_nodes_are_tried_from_a_random_one() -> None:
    import random

    from intake.bus.connection import nodes_in_turn

    nodes = ["amqp://a", "amqp://b", "amqp://c"]
    rng = random.Random(7)
    orders = [nodes_in_turn(nodes, rng) for _ in range(60)]
    # Each connect tries every node once, in the listed cyclic order, from varying starts.
    for order in orders:
        assert sorted(order) == nodes
        start = nodes.index(order[0])
        assert order == nodes[start:] + nodes[:start]
    assert {order[0] for order in orders} == set(nodes)
    assert nodes_in_turn(["amqp://only"]) == ["amqp://only"]
