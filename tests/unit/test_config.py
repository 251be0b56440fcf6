"""The YAML config loader: line numbers in every error, `${ENV}` secrets, unknown keys refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from intake.config import ConfigPattern, check_pattern, load_document, merge_rules, validate
from intake.errors import ConfigInvalid


class Mailbox(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    password: str
    port: int = 993


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accounts: list[Mailbox]


def write(tmp_path: Path, text: str, name: str = "intake.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_validation_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "channels:\n  email:\n    accounts:\n      - id: a\n"
                           "        password: x\n        port: many\n")
    doc = load_document(path)
    with pytest.raises(ConfigInvalid) as caught:
        validate(doc, Section, doc.section("channels", "email"), prefix=("channels", "email"))
    assert caught.value.problems == [
        f"{path}:6: channels.email.accounts.0.port: "
        "Input should be a valid integer, unable to parse string as an integer"]


def test_unknown_keys_are_errors_with_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, "channels:\n  email:\n    accounts:\n      - id: a\n"
                           "        password: x\n        pasword: y\n")
    doc = load_document(path)
    with pytest.raises(ConfigInvalid) as caught:
        validate(doc, Section, doc.section("channels", "email"), prefix=("channels", "email"))
    assert f"{path}:6: channels.email.accounts.0.pasword: Extra inputs" in caught.value.problems[0]


def test_unknown_top_level_section_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "desks: []\nroutse: []\n")
    with pytest.raises(ConfigInvalid) as caught:
        load_document(path)
    assert caught.value.problems[0].startswith(f"{path}:2: routse: unknown section")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "desks:\n  - id: a\n  name: [unclosed\n")
    with pytest.raises(ConfigInvalid) as caught:
        load_document(path)
    assert caught.value.problems[0].startswith(f"{path}:")
    assert "YAML syntax" in caught.value.problems[0]


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "desks: []\ndesks: []\n")
    with pytest.raises(ConfigInvalid, match="duplicate key"):
        load_document(path)


def test_secrets_come_from_the_environment(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILBOX_PASSWORD", "s3cret")
    path = write(tmp_path, "channels:\n  email:\n    accounts:\n      - id: a\n"
                           "        password: ${MAILBOX_PASSWORD}\n")
    doc = load_document(path)
    section = validate(doc, Section, doc.section("channels", "email"))
    assert section.accounts[0].password == "s3cret"


def test_a_missing_environment_variable_is_named(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    path = write(tmp_path, "channels:\n  email:\n    accounts:\n      - id: a\n"
                           "        password: ${NOT_SET_ANYWHERE}\n")
    with pytest.raises(ConfigInvalid) as caught:
        load_document(path)
    assert f"{path}:5" in caught.value.problems[0]
    assert "NOT_SET_ANYWHERE is not set" in caught.value.problems[0]


def test_rules_file_sections_replace_the_config_and_keep_their_own_lines(tmp_path: Path) -> None:
    config = load_document(write(tmp_path, "desks:\n  - id: a\nchannels: {}\n"))
    rules_path = write(tmp_path, "\n\ndesks:\n  - id: b\n", "rules.yaml")
    merged = merge_rules(config, load_document(rules_path))
    assert merged.data["desks"] == [{"id": "b"}]

    class Desk(BaseModel):
        model_config = ConfigDict(extra="forbid")
        id: int

    class Desks(BaseModel):
        desks: list[Desk]

    with pytest.raises(ConfigInvalid) as caught:
        validate(merged, Desks, merged.data)
    assert caught.value.problems[0].startswith(f"{rules_path}:4: desks.0.id")


@pytest.mark.parametrize(("pattern", "hint"), [
    ("(a)\\1", "backreferences are not supported"),
    ("(?P<x>a)(?P=x)", "backreferences are not supported"),
    ("(?=a)b", "lookahead and lookbehind"),
    ("(?<!a)b", "lookahead and lookbehind"),
    ("a++", "possessive quantifiers are not needed"),
    ("(?>a+)", "atomic groups are not needed"),
    ("abc\\Z", "write `\\z`"),
    ("\\u4e00", "write a code point as `\\x{4e00}`"),
    ("(?x) a b", "the flags RE2 knows are i, m, s and U"),
    ("(?(1)a|b)", "conditional groups are not supported"),
])
def test_check_pattern_refuses_what_re2_cannot_run_with_a_hint(pattern: str, hint: str) -> None:
    with pytest.raises(ValueError, match=r"^not a pattern RE2 can run: ") as caught:
        check_pattern(pattern)
    assert hint in str(caught.value)


@pytest.mark.parametrize("pattern", [
    # The nested repeats the old backtracking detector refused: RE2 runs them in linear time.
    "(a+)+$", "(a*)*", "(.*a)*", "(\\w+\\s?)+$", "[a-z]+(\\.[a-z]+)*@",
    "a+b+", "(ab)+", "^\\d{3}-\\d{4}$", "^[\\w.+-]+@[\\w-]+\\.[\\w.]+$", "订单|order",
    "(?i)报价|价格|购买|quote|pricing", "(?P<topic>退[货款])", "\\p{Han}+", "\\x{4e00}",
])
def test_check_pattern_accepts_what_re2_runs(pattern: str) -> None:
    check_pattern(pattern)


@pytest.mark.parametrize(("pattern", "reason"), [
    ("(", "missing )"), ("a{2,1}", "invalid repetition size"), ("[z-a]", "invalid character class"),
])
def test_check_pattern_refuses_what_does_not_compile(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=r"^not a pattern RE2 can run: ") as caught:
        check_pattern(pattern)
    assert reason in str(caught.value)


def test_config_pattern_is_a_pydantic_type() -> None:
    class Rule(BaseModel):
        pattern: ConfigPattern

    assert Rule(pattern="^ok$").pattern == "^ok$"
    assert Rule(pattern="(a+)+$").pattern == "(a+)+$"
    with pytest.raises(ValidationError, match="lookahead"):
        Rule(pattern="(?=x)")


EXAMPLES = ("deploy/intake.example.yaml", "router/example-rules.yaml",
            "connectors/webform/example.yaml")


def _when_patterns(source: str) -> list[str]:
    """The patterns of every `matches` in a `when` expression."""
    from router.expr import Node, parse

    def visit(node: Node) -> list[str]:
        own = [str(node.children[1].value)] if node.kind == "compare" and \
            node.value == "matches" else []
        return own + [p for child in node.children for p in visit(child)]

    return visit(parse(source))


def _patterns_in(value: object) -> list[str]:
    """Every `matches:` (rule conditions) and `pattern:` (form fields) string in a document."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("matches", "pattern") and isinstance(item, str):
                found.append(item)
            elif key == "when" and isinstance(item, str):
                found.extend(_when_patterns(item))
            else:
                found.extend(_patterns_in(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(_patterns_in(item))
    return found


def test_every_example_config_loads_and_its_patterns_run_on_re2() -> None:
    from intake.cli import check_config
    from intake.patterns import Pattern
    from intake.settings import REPO_ROOT, IntakeSettings

    deploy, rules, webform = (REPO_ROOT / name for name in EXAMPLES)
    assert check_config(IntakeSettings(config=deploy)) == []
    assert check_config(IntakeSettings(config=deploy, rules=rules)) == []
    # The web form's example is the `channels` part alone: its routing comes from the rules.
    assert check_config(IntakeSettings(config=webform, rules=rules)) == []
    patterns = [p for path in (deploy, rules, webform)
                for p in _patterns_in(load_document(path).data)]
    assert "(?i)报价|价格|购买|quote|pricing" in patterns
    # They decide as they did on Python's `re` (checked here on our own short texts).
    texts = ["我想了解报价", "QUOTE please", "Pricing?", "购买", "订单还没到", "", "quot e"]
    for pattern in patterns:
        compiled = Pattern(pattern)
        for text in texts:
            assert compiled.search(text) is bool(re.search(pattern, text)), (pattern, text)


def test_config_check_names_file_line_and_reason_of_a_pattern_re2_cannot_run(
        tmp_path: Path) -> None:
    from intake.cli import check_config
    from intake.settings import IntakeSettings

    path = tmp_path / "intake.yaml"
    path.write_text("""\
desks:
  - {id: general, name: General}
routes:
  - id: refunds
    match:
      where:
        - {field: text, matches: "refund(?=.*order)"}
    desk: general
default_route: {desk: general}
channels:
  webform:
    forms:
      - id: contact
        title: Contact
        fields:
          - {name: order, label: Order, pattern: "(\\\\d)\\\\1{5}"}
""", encoding="utf-8")
    problems = check_config(IntakeSettings(config=path))
    assert len(problems) == 2, problems
    rule, form = problems
    assert rule.startswith(f"{path}:7: routes.0.match.where.0.matches: ")
    assert "not a pattern RE2 can run" in rule and "lookahead" in rule
    assert form.startswith(f"{path}:16: ") and "backreferences are not supported" in form
