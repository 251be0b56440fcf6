"""`intake new-connector`: the folder it writes passes the contract suite and the checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from intake.conformance import check_folder
from intake.scaffold import new_connector


def test_a_new_connector_passes_its_contract_and_the_checks(tmp_path: Path) -> None:
    connectors = tmp_path / "connectors"
    connectors.mkdir()
    folder = new_connector("api", connectors, port=8099)
    assert check_folder(folder) == []
    # The new folder joins the installed `connectors` package, as if written into the repo.
    join = f"import connectors; connectors.__path__.append({str(connectors)!r})\n"
    (tmp_path / "conftest.py").write_text(join)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTAKE_")}
    checked = subprocess.run(
        [sys.executable, "-c", join +
         "from pathlib import Path; from connectors.api import CHANNEL;"
         "from intake.conformance import check_channel;"
         f"print(check_channel(Path({str(folder)!r}), CHANNEL))"],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert checked.stdout.strip() == "[]", checked.stderr
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function",
         str(folder)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        check=False)
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-2000:]
    assert "6 passed" in tested.stdout  # the whole contract suite


def test_only_channels_of_the_common_message_can_be_scaffolded(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"add it to `Channel` in intake/message\.py"):
        new_connector("fax", tmp_path)
    (tmp_path / "email").mkdir()
    with pytest.raises(ValueError, match="exists already"):
        new_connector("email", tmp_path)
