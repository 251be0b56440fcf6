"""The deployment's YAML config: loading with line numbers, `${ENV}` secrets, section validation.

Every service loads the same file and validates only its own part with its own pydantic model;
`intake config check` validates all of it. Errors name the file, the line and the field.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ValidationError

from .errors import ConfigInvalid
from .patterns import compiled

TOP_LEVEL_SECTIONS = (
    "label",
    "options",
    "tests",
    "calendars",
    "desks",
    "skill_groups",
    "categories",
    "sla_policies",
    "escalations",
    "routes",
    "default_route",
    "channels",
    "auto_replies",  # read by the ticket core (ticket_core/autoreply.py)
    "tickets",  # read by the ticket core (ticket_core/tickets_config.py)
)
ROUTING_SECTIONS = tuple(s for s in TOP_LEVEL_SECTIONS
                         if s not in ("channels", "auto_replies", "tickets"))

# No real config comes near this many values; a file that expands past it is refused.
MAX_VALUES = 100_000
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
Model = TypeVar("Model", bound=BaseModel)


@dataclass
class ConfigDocument:
    """A parsed YAML file plus the line of every key and item, for error messages."""

    path: Path
    data: dict[str, Any]
    lines: dict[tuple[str | int, ...], int] = field(default_factory=dict)
    # Sections that came from another file (INTAKE_RULES), for error messages.
    sources: dict[str, ConfigDocument] = field(default_factory=dict)

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return None

    def where(self, loc: Sequence[str | int]) -> str:
        line = self.line_of(loc)
        return f"{self.path}:{line}" if line else str(self.path)

    def section(self, *path: str) -> Any:
        node: Any = self.data
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node


def _construct(node: yaml.Node, loc: tuple[str | int, ...], doc: ConfigDocument,
               problems: list[str], budget: list[int]) -> Any:
    # Aliases make the node graph a DAG: nine aliases of nine aliases ... expand exponentially
    # ("billion laughs"). Count what is built and stop long before that matters.
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigInvalid([f"{doc.path}:{node.start_mark.line + 1}: the config expands to "
                             f"more than {MAX_VALUES} values (YAML aliases?)"])
    doc.lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in result:
                problems.append(f"{doc.path}:{key_node.start_mark.line + 1}: "
                                f"{'.'.join(map(str, (*loc, key)))}: duplicate key")
            result[key] = _construct(value_node, (*loc, key), doc, problems, budget)
            doc.lines[(*loc, key)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*loc, i), doc, problems, budget)
                for i, item in enumerate(node.value)]
    value = yaml.SafeLoader("").construct_object(node, deep=True)
    if isinstance(value, str):
        value = _substitute_env(value, doc, loc, problems)
    return value


def _substitute_env(value: str, doc: ConfigDocument, loc: tuple[str | int, ...],
                    problems: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            problems.append(f"{doc.where(loc)}: {'.'.join(map(str, loc))}: "
                            f"environment variable {name} is not set")
            return ""
        return os.environ[name]

    return _ENV_REF.sub(replace, value)


def load_document(path: Path) -> ConfigDocument:
    """Parse the YAML file; raise ConfigInvalid naming the line of a syntax error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigInvalid([f"{path}: cannot read: {exc.strerror}"]) from exc
    doc = ConfigDocument(path=path, data={})
    problems: list[str] = []
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = _construct(node, (), doc, problems, [MAX_VALUES]) if node is not None else {}
    except yaml.YAMLError as exc:  # syntax, and tags SafeLoader refuses (!!python/object)
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigInvalid([f"{where}: YAML syntax: {getattr(exc, 'problem', exc)}"]) from exc
    except RecursionError as exc:
        raise ConfigInvalid([f"{path}: the config is nested too deeply"]) from exc
    if not isinstance(data, dict):
        raise ConfigInvalid([f"{path}:1: the config must be a mapping of sections"])
    doc.data = data
    for key in data:
        if key not in TOP_LEVEL_SECTIONS:
            problems.append(f"{doc.where((key,))}: {key}: unknown section "
                            f"(expected one of {', '.join(TOP_LEVEL_SECTIONS)})")
    # Every service looks up `channels.<name>`: anything but a mapping there is refused here.
    if data.get("channels") is not None and not isinstance(data["channels"], dict):
        problems.append(f"{doc.where(('channels',))}: channels: must be a mapping of channel "
                        "names (webform: {forms: [...]})")
    if problems:
        raise ConfigInvalid(problems)
    return doc


def merge_rules(doc: ConfigDocument, rules: ConfigDocument | None) -> ConfigDocument:
    """Sections of the `INTAKE_RULES` file replace the same sections of the main config."""
    if rules is None:
        return doc
    data = dict(doc.data)
    lines = {loc: line for loc, line in doc.lines.items() if not loc or loc[0] not in rules.data}
    for key, value in rules.data.items():
        if key == "channels":
            raise ConfigInvalid([f"{rules.where((key,))}: channels: belongs in INTAKE_CONFIG, "
                                 "not in the rules file"])
        data[key] = value
    lines.update({loc: line for loc, line in rules.lines.items() if loc})
    return ConfigDocument(path=doc.path, data=data, lines=lines,
                          sources={key: rules for key in rules.data})


def validate(doc: ConfigDocument, model: type[Model], data: Any,
             prefix: tuple[str | int, ...] = ()) -> Model:
    """Validate `data` (found at `prefix` in the document) and map errors to file lines."""
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = (*prefix, *error["loc"])
            source = doc.sources.get(str(loc[0])) if loc else None
            where = (source or doc).where(loc)
            dotted = ".".join(str(part) for part in loc) or "(top)"
            problems.append(f"{where}: {dotted}: {error['msg']}")
        raise ConfigInvalid(problems) from exc


def check_pattern(pattern: str) -> None:
    """Refuse a pattern RE2 cannot run (PatternInvalid, a ValueError, with RE2's reason).

    Patterns in the config (rule conditions, form fields) run on RE2, in time linear in the
    text, so no customer's text can make them slow; backreferences and lookaround, which need
    a backtracking engine, are what RE2 refuses.
    """
    compiled(pattern)


def _config_pattern(value: str) -> str:
    check_pattern(value)
    return value


# A config string that must be a pattern RE2 runs (on customer text, in linear time).
ConfigPattern = Annotated[str, AfterValidator(_config_pattern)]
