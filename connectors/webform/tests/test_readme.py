"""The README's settings table follows WebformSettings."""

from __future__ import annotations

from pathlib import Path

from connectors.webform.settings import WebformSettings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_every_setting_is_in_the_readme_with_its_default() -> None:
    text = README.read_text(encoding="utf-8")
    for name, field in WebformSettings.model_fields.items():
        assert f"| `INTAKE_WEBFORM_{name.upper()}` | `{field.default}` |" in text, name
