"""Fixtures for the router's tests: rules written to tmp files, messages built in one call."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from intake.config import load_document
from intake.message import Message
from router.rules import RuleSet, load_rules

DECLARATIONS = """\
desks:
  - {id: general, name: 综合}
  - {id: aftersales, name: 售后}
  - {id: sales, name: 销售}
skill_groups:
  - {id: frontline, desk: general}
  - {id: complaints, desk: aftersales}
  - {id: presales, desk: sales}
categories:
  - {id: complaint, name: 投诉}
  - {id: inquiry, name: 咨询}
sla_policies:
  - {id: standard, first_response: 1h}
"""
DEFAULT = """\
default_route:
  desk: general
  skill_group: frontline
"""

RulesFrom = Callable[..., RuleSet]


def rules_text(routes: str = "", *, default: str = DEFAULT,
               declarations: str = DECLARATIONS) -> str:
    routes = textwrap.dedent(routes).strip("\n")
    body = f"routes:\n{textwrap.indent(routes, '  ')}\n" if routes else ""
    return declarations + body + textwrap.dedent(default)


@pytest.fixture
def write_rules(tmp_path: Path) -> Callable[..., Path]:
    def write(routes: str = "", name: str = "rules.yaml", **kwargs: Any) -> Path:
        path = tmp_path / name
        path.write_text(rules_text(routes, **kwargs), encoding="utf-8")
        return path

    return write


@pytest.fixture
def rules_from(write_rules: Callable[..., Path]) -> RulesFrom:
    """Write routes (YAML of the list items) after the standard declarations and load them."""
    def load(routes: str = "", lint: bool = True, **kwargs: Any) -> RuleSet:
        path = write_rules(routes, **kwargs)
        return load_rules(load_document(path), path.read_bytes(), lint=lint)

    return load


def make_message(**fields: Any) -> Message:
    """A valid web form submission, with any field replaced."""
    data: dict[str, Any] = {
        "idempotency_key": "webform:contact:abc",
        "channel": "webform",
        "account": "contact",
        "kind": "form_submission",
        "sender": {"name": "李雷", "identities": [
            {"kind": "email", "value": "li@example.com", "verified": False}]},
        "subject": "订单问题",
        "text": "我的订单还没到",
        "form": {"form_id": "contact", "fields": {"topic": "complaint", "order": "12345"}},
        "received_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    data.update(fields)
    return Message.model_validate(data)


@pytest.fixture
def message() -> Callable[..., Message]:
    return make_message
