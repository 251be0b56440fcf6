"""`intake connectors check`: every connector folder checked alike, as STYLE.md describes it."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from .channel import CONNECTORS_DIR, Channel

REQUIRED_FILES = ("__init__.py", "channel.py", "settings.py", "inbound.py", "normalize.py",
                  "errors.py", "README.md")
# A connector with several transports (or several payload kinds) makes these packages, one
# module each: `inbound/smtp.py`, `inbound/imap.py`, `normalize/mime.py`.
MODULES_OR_PACKAGES = ("inbound", "normalize")
# Optional modules, under these names only (openapi.py: an HTTP edge's own API document).
OPTIONAL_FILES = ("outbound.py", "client.py", "state.py", "openapi.py", "example.yaml")
OPTIONAL_FOLDERS = (*MODULES_OR_PACKAGES, "templates", "static", "fixtures", "tests",
                    "__pycache__")
# Channel code talks to the bus and the database only through the kernel's facade (`intake`,
# the names in its __all__), never a kernel module, a broker or database library, or another
# service.
FORBIDDEN_IMPORTS = ("aio_pika", "aiormq", "pamqp", "sqlalchemy", "alembic", "asyncpg",
                     "aiosqlite", "psycopg", "psycopg2", "router", "ticket_core")
FIXTURE_COMPANIONS = (".expected.json", ".headers.json", ".ignored.txt")


def check_folder(folder: Path) -> list[str]:
    """What can be told from the files alone: names, fixtures, imports, the contract test."""
    name = folder.name
    problems: list[str] = []
    for required in REQUIRED_FILES:
        stem = required.removesuffix(".py")
        if stem in MODULES_OR_PACKAGES and (folder / stem / "__init__.py").is_file():
            continue
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
    report: dict[str, list[str]] = {}
    for folder in sorted(p for p in connectors_dir.iterdir()
                         if p.is_dir() and (p / "__init__.py").exists()):
        problems = check_folder(folder)
        try:
            module = importlib.import_module(f"{connectors_dir.name}.{folder.name}")
        except Exception as exc:  # one broken connector is reported, the others still checked
            problems.append(f"{folder.name}: importing it failed: {exc!r}")
            report[folder.name] = problems
            continue
        channel = getattr(module, "CHANNEL", None)
        if not isinstance(channel, Channel):
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
    """Channel code imports the kernel's facade, the standard library and its protocol's
    library: never `intake.<module>`, a broker or database library, a service, or another
    connector (absolute, or relative beyond its own folder)."""
    problems = []
    others = {p.name for p in folder.parent.iterdir() if p.is_dir()} - {folder.name}
    for source in sorted(folder.rglob("*.py")):
        relative = source.relative_to(folder)
        if "tests" in relative.parts:
            continue  # tests may set up real brokers and databases
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
        # How deep the module sits below the connector's folder: `from ..x` in inbound/smtp.py
        # stays inside, `from ...x` leaves it.
        depth = len(relative.parts) - 1
        for node in ast.walk(tree):
            modules: list[str] = []
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level > depth + 1:
                    modules = [f"{'.' * node.level}{node.module or ''}"]
                elif node.module and node.level == 0:
                    modules = [node.module]
            for module in modules:
                problem = _forbidden(module, others)
                if problem:
                    where = source.relative_to(folder.parent)
                    problems.append(f"{folder.name}: {where}:{node.lineno} imports {module}; "
                                    f"{problem}")
    return problems


def _forbidden(module: str, others: set[str]) -> str | None:
    parts = module.split(".")
    if module.startswith("."):
        return "a relative import may not leave the connector's folder"
    if parts[0] == "intake" and len(parts) > 1:
        return ("channel code imports the kernel's facade only (`from intake import …`); "
                "if a name is missing, the kernel exports it")
    if parts[0] in FORBIDDEN_IMPORTS:
        return "channel code reaches the bus, databases and services only through `intake`"
    if parts[0] == "connectors" and len(parts) > 1 and parts[1] in others:
        return "a connector never imports another connector"
    return None
