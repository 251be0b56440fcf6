"""The accounts of `channels.wechat`: what `intake config check` refuses, never printing a secret;
and the README's settings table follows WechatSettings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.wechat import CHANNEL
from connectors.wechat.settings import OfficialAccount, WechatAccounts, WechatSettings
from intake.config import load_document
from intake.errors import ConfigInvalid

from .simulator import EXAMPLE

README = Path(__file__).resolve().parent.parent / "README.md"


def _doc(tmp_path: Path, accounts: list[dict[str, Any]]) -> Any:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    data["channels"]["wechat"]["accounts"] = accounts
    path = tmp_path / "intake.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return load_document(path)


SAFE: dict[str, Any] = {"id": "shop", "kind": "official_account", "mode": "safe",
                        "app_id": "wxshop", "app_secret": "TOPSECRET-app", "token": "tok123",
                        "encoding_aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"}


@pytest.mark.parametrize(("change", "says"), [
    ({"encoding_aes_key": "TOPSECRETshort"}, "43 characters"),
    ({"encoding_aes_key": "!" * 43}, "base64"),
    ({"token": "TOPSECRET token"}, "3 to 32 letters and digits"),
    ({"id": "shop/../x"}, "id"),
    ({"encoding_aes_key": None}, "required in safe mode"),
])
def test_a_bad_account_is_refused_without_printing_a_secret(
        tmp_path: Path, change: dict[str, Any], says: str) -> None:
    account = {k: v for k, v in {**SAFE, **change}.items() if v is not None}
    with pytest.raises(ConfigInvalid) as refused:
        CHANNEL.load_accounts(_doc(tmp_path, [account]))
    text = "\n".join(refused.value.problems)
    assert says in text and "TOPSECRET" not in text


def test_account_ids_are_unique(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid) as refused:
        CHANNEL.load_accounts(_doc(tmp_path, [SAFE, {**SAFE, "app_id": "other"}]))
    assert "appears twice" in "\n".join(refused.value.problems)


def test_a_secret_may_come_from_the_environment(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_SECRET", "from-the-env")
    accounts = CHANNEL.load_accounts(_doc(tmp_path, [{**SAFE, "app_secret": "${SHOP_SECRET}"}]))
    assert isinstance(accounts, WechatAccounts)
    account = accounts.find("shop")
    assert isinstance(account, OfficialAccount)
    assert account.app_secret.get_secret_value() == "from-the-env"
    assert "from-the-env" not in repr(account)


def test_the_example_has_the_four_public_test_accounts() -> None:
    accounts = CHANNEL.load_accounts(load_document(EXAMPLE))
    assert isinstance(accounts, WechatAccounts)
    assert [(a.id, a.kind, a.mode) for a in accounts.accounts] == [
        ("wx2c2769f8efd9abc2", "official_account", "safe"),
        ("wx1111111111111111", "official_account", "plain"),
        ("wx2222222222222222", "official_account", "compatible"),
        ("wx5823bf96d3bd56c7-218", "wecom_app", "safe")]


def test_every_setting_is_in_the_readme_with_its_default() -> None:
    text = README.read_text(encoding="utf-8")
    for name, field in WechatSettings.model_fields.items():
        default = f"`{field.default}`" if field.default != "" else "empty"
        assert f"| `INTAKE_WECHAT_{name.upper()}` | wechat | {default} |" in text, name
