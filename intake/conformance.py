"""`intake connectors check`: every connector folder checked alike, as STYLE.md describes it."""

from __future__ import annotations

import ast
from pathlib import Path

from .channel import CONNECTORS_DIR, Channel, discover_channels

REQUIRED_FILES = ("__init__.py", "channel.py", "settings.py", "inbound.py", "normalize.py",
                  "errors.py", "README.md")
# Optional modules, under these names only (openapi.py: an HTTP edge's own API document).
OPTIONAL_FILES = ("outbound.py", "client.py", "state.py", "openapi.py", "example.yaml")
OPTIONAL_FOLDERS = ("inbound", "templates", "static", "fixtures", "tests", "__pycache__")
# Channel code talks to the bus and the database only through the kernel.
FORBIDDEN_IMPORTS = ("aio_pika", "aiormq", "pamqp", "sqlalchemy", "alembic", "asyncpg",
                     "aiosqlite", "router", "ticket_core")
FIXTURE_COMPANIONS = (".expected.json", ".headers.json", ".ignored.txt")


def check_folder(folder: Path) -> list[str]:
    """What can be told from the files alone: names, fixtures, imports, the contract test."""
    name = folder.name
    problems: list[str] = []
    for required in REQUIRED_FILES:
        if not (folder / required).is_file():
            problems.append(f"{name}: {required} is missing")
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        allowed = (REQUIRED_FILES + OPTIONAL_FILES if entry.is_file() else OPTIONAL_FOLDERS)
        if entry.name not in allowed:
            problems.append(f"{name}: {entry.name} is not a connector file name "
                            f"(allowed: {', '.join(REQUIRED_FILES + OPTIONAL_FILES)}; "
                            f"folders {', '.join(OPTIONAL_FOLDERS[:-1])})")
    problems += _check_fixtures(folder)
    problems += _check_imports(folder)
    contract = folder / "tests" / "test_contract.py"
    if not contract.is_file():
        problems.append(f"{name}: tests/test_contract.py is missing (subclass "
                        "intake.testing.ConnectorContract)")
    elif "ConnectorContract" not in contract.read_text(encoding="utf-8"):
        problems.append(f"{name}: tests/test_contract.py does not subclass ConnectorContract")
    return problems


def check_channel(folder: Path, channel: Channel) -> list[str]:
    """What needs the imported CHANNEL: its name, settings prefix and the README's table."""
    name = folder.name
    problems: list[str] = []
    if channel.name != name:
        problems.append(f"{name}: CHANNEL.name is {channel.name!r}, not the folder's name")
    prefix = f"INTAKE_{name.upper()}_"
    actual = channel.settings.model_config.get("env_prefix")
    if actual != prefix:
        problems.append(f"{name}: {channel.settings.__name__} reads {actual!r}, not {prefix!r}")
    if "port" not in channel.settings.model_fields:
        problems.append(f"{name}: {channel.settings.__name__} has no `port` field")
    readme = folder / "README.md"
    if readme.is_file():
        text = readme.read_text(encoding="utf-8")
        for field in channel.settings.model_fields:
            variable = f"{prefix}{field.upper()}"
            if variable not in text:
                problems.append(f"{name}: README.md does not document {variable}")
    if channel.sender is not None and not (folder / "outbound.py").is_file():
        problems.append(f"{name}: CHANNEL has a sender but outbound.py is missing")
    return problems


def check_all(connectors_dir: Path = CONNECTORS_DIR) -> dict[str, list[str]]:
    channels = discover_channels()
    report: dict[str, list[str]] = {}
    for folder in sorted(p for p in connectors_dir.iterdir()
                         if p.is_dir() and (p / "__init__.py").exists()):
        problems = check_folder(folder)
        channel = next((c for c in channels.values()
                        if c.settings.__module__.split(".")[1] == folder.name), None)
        if channel is None:
            problems.append(f"{folder.name}: __init__.py does not export CHANNEL")
        else:
            problems += check_channel(folder, channel)
        report[folder.name] = problems
    return report


def _check_fixtures(folder: Path) -> list[str]:
    fixtures = folder / "fixtures"
    if not fixtures.is_dir():
        return [f"{folder.name}: fixtures/ is missing (capture real payloads first)"]
    problems = []
    payloads = [p for p in fixtures.iterdir()
                if p.is_file() and not p.name.startswith(".")
                and not p.name.endswith(FIXTURE_COMPANIONS)]
    if not payloads:
        problems.append(f"{folder.name}: fixtures/ holds no captured payload")
    for payload in sorted(payloads):
        stem = payload.name.split(".", 1)[0]
        if not ((fixtures / f"{stem}.expected.json").exists()
                or (fixtures / f"{stem}.ignored.txt").exists()):
            problems.append(f"{folder.name}: fixtures/{payload.name} has neither "
                            f"{stem}.expected.json nor {stem}.ignored.txt")
    return problems


def _check_imports(folder: Path) -> list[str]:
    problems = []
    others = {p.name for p in folder.parent.iterdir() if p.is_dir()} - {folder.name}
    for source in sorted(folder.rglob("*.py")):
        if "tests" in source.relative_to(folder).parts:
            continue  # tests may set up real brokers and databases
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
        for node in ast.walk(tree):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            for module in modules:
                top = module.split(".")[0]
                parts = module.split(".")
                if top in FORBIDDEN_IMPORTS or (
                        top == "connectors" and len(parts) > 1 and parts[1] in others):
                    where = source.relative_to(folder.parent)
                    problems.append(f"{folder.name}: {where}:{node.lineno} imports {module}; "
                                    "channel code imports only the kernel (`intake`)")
    return problems
