"""A hostile YAML config ends as ConfigInvalid with its problem, never a hang or a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from intake.cli import check_config
from intake.config import load_document
from intake.errors import ConfigInvalid
from intake.settings import IntakeSettings


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "intake.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigInvalid) as caught:
        load_document(path)
    assert check_config(IntakeSettings(config=path)) == caught.value.problems
    return caught.value.problems


def test_billion_laughs_aliases_are_refused_quickly(tmp_path: Path) -> None:
    text = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))
    # 9^10 nodes if expanded: a config loader without the bound never returns (the test's
    # timeout fails it), so the refusal itself is the proof; no stopwatch on a busy machine.
    problems = problems_of(tmp_path, text)
    assert any("expands to more than" in p for p in problems), problems


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "[" * 5000 + "]" * 5000) == [
        f"{tmp_path / 'intake.yaml'}: the config is nested too deeply"]
    assert "nested too deeply" in problems_of(tmp_path, "a: " + "{a: " * 3000 + "1"
                                              + "}" * 3000)[0]


@pytest.mark.parametrize("tag", ["!!python/object:os.system ls",
                                 "!!python/name:os.system", "!custom x"])
def test_tags_safe_yaml_does_not_know_are_a_syntax_problem(tmp_path: Path, tag: str) -> None:
    problems = problems_of(tmp_path, f"desks: {tag}\n")
    assert problems and "YAML syntax" in problems[0] and ":1:" in problems[0], problems


def test_a_nul_byte_is_a_syntax_problem(tmp_path: Path) -> None:
    assert "YAML syntax" in problems_of(tmp_path, "desks: []\n\x00")[0]


def test_a_few_aliases_are_still_fine(tmp_path: Path) -> None:
    path = tmp_path / "intake.yaml"
    path.write_text("desks:\n  - &d {id: a, name: A}\ncategories: [*d]\n", encoding="utf-8")
    assert load_document(path).data["categories"] == [{"id": "a", "name": "A"}]


def test_a_tag_on_a_list_builds_plain_data_and_runs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "intake.yaml"
    path.write_text("desks: !!python/object/apply:os.system [touch pwned]\n", encoding="utf-8")
    assert load_document(path).data == {"desks": ["touch pwned"]}
    assert check_config(IntakeSettings(config=path))  # refused by the desks model
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


@pytest.mark.parametrize("value", ["true", "[webform]", "[{webform: {}}]", "1", "x"])
def test_a_channels_section_that_is_not_a_mapping_is_a_problem(tmp_path: Path,
                                                               value: str) -> None:
    # Found by `make fuzz` (config_check): `channels: true` was a TypeError out of config check.
    problems = problems_of(tmp_path, f"desks: []\nchannels: {value}\n")
    assert problems == [f"{tmp_path / 'intake.yaml'}:2: channels: must be a mapping of channel "
                        "names (webform: {forms: [...]})"]
