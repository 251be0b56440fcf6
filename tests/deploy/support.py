"""What the deploy tests share: the tools they drive, the rendered manifests, the CRDs."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from intake.settings import REPO_ROOT
from tests.conftest import IN_CI

DEPLOY = REPO_ROOT / "deploy"
HERE = Path(__file__).resolve().parent
CRDS = HERE / "crds"
KUBERNETES_VERSION = "1.32"
OVERLAYS = ("dev", "production")


def tool(name: str) -> str:
    """A tool's path (the venv's own first); missing: skip, or fail under CI=true."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        message = f"{name} is not installed: the check that runs it is skipped"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


@functools.cache
def rendered_overlay(overlay: str) -> list[dict[str, Any]]:
    kubectl = tool("kubectl")
    out = subprocess.run([kubectl, "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the openAPIV3Schema of that version of the CRD."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text(encoding="utf-8"))
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}
