"""`intake connectors check`: the shipped connectors pass; each kind of mistake is named."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel
from pydantic_settings import BaseSettings, SettingsConfigDict

from intake.channel import Channel
from intake.conformance import check_all, check_channel, check_folder


def test_every_shipped_connector_passes() -> None:
    report = check_all()
    assert "webform" in report
    assert report == {name: [] for name in report}


def make_folder(root: Path) -> Path:
    folder = root / "fax"
    (folder / "fixtures").mkdir(parents=True)
    (folder / "tests").mkdir()
    for name in ("__init__.py", "channel.py", "settings.py", "normalize.py", "errors.py",
                 "README.md"):
        (folder / name).write_text('"""x"""\n')
    (folder / "inbound.py").write_text(
        "import aio_pika\nfrom connectors.webform import normalize\nfrom intake import Message\n")
    (folder / "utils.py").write_text("")
    (folder / "fixtures" / "page_received.xml").write_text("<fax/>")
    (folder / "fixtures" / "cover_sheet.json").write_text("{}")
    (folder / "fixtures" / "cover_sheet.expected.json").write_text("{}")
    (root / "webform").mkdir()
    return folder


def test_each_mistake_in_a_folder_is_named(tmp_path: Path) -> None:
    problems = check_folder(make_folder(tmp_path))
    assert "fax: utils.py is not a connector file name" in " ".join(problems)
    assert any("fixtures/page_received.xml has neither page_received.expected.json" in p
               for p in problems)
    assert not any("cover_sheet" in p for p in problems)
    assert any(p.startswith("fax: fax/inbound.py:1 imports aio_pika") for p in problems)
    assert any("imports connectors.webform" in p for p in problems)
    assert not any("imports intake" in p for p in problems)
    assert "fax: tests/test_contract.py is missing" in " ".join(problems)


def test_a_channel_must_match_its_folder_and_document_its_settings(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    (folder / "README.md").write_text("| `INTAKE_FAX_PORT` | 8009 |\n")

    class FaxSettings(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="INTAKE_TELEFAX_")
        port: int = 8009
        dial_timeout_s: float = 30

    class FaxAccounts(BaseModel):
        lines: list[str] = []

    channel = Channel(name="telefax", settings=FaxSettings, accounts=FaxAccounts,
                      routes=list, sender=object)
    problems = check_channel(folder, channel)
    assert "fax: CHANNEL.name is 'telefax', not the folder's name" in problems
    assert "fax: FaxSettings reads 'INTAKE_TELEFAX_', not 'INTAKE_FAX_'" in problems
    assert "fax: README.md does not document INTAKE_FAX_DIAL_TIMEOUT_S" in problems
    assert "fax: CHANNEL has a sender but outbound.py is missing" in problems


def test_connectors_import_the_kernel_facade_only(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    (folder / "outbound.py").write_text(
        "from intake import OutboundMessage, Sent\n"
        "from intake.bus import Bus\n"
        "import intake.state\n"
        "import sqlalchemy\n"
        "from . import settings\n")
    problems = [p for p in check_folder(folder) if "outbound.py:" in p]
    assert any("outbound.py:2 imports intake.bus; channel code imports the kernel's facade"
               in p for p in problems)
    assert any("outbound.py:3 imports intake.state" in p for p in problems)
    assert any("outbound.py:4 imports sqlalchemy" in p for p in problems)
    assert len(problems) == 3  # `from intake import …` and its own modules are fine


def test_inbound_and_normalize_may_be_packages(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    (folder / "inbound.py").unlink()
    (folder / "normalize.py").unlink()
    for package in ("inbound", "normalize"):
        (folder / package).mkdir()
        (folder / package / "__init__.py").write_text('"""x"""\n')
    (folder / "inbound" / "smtp.py").write_text(
        "from ..normalize import mime\nfrom ...webform import inbound\n")
    problems = check_folder(folder)
    assert not any("inbound.py is missing" in p or "normalize.py is missing" in p
                   for p in problems)
    assert not any(p.startswith(("fax: inbound is", "fax: normalize is")) for p in problems)
    escapes = [p for p in problems if "smtp.py" in p]
    assert len(escapes) == 1 and "smtp.py:2 imports ...webform" in escapes[0]
    assert "may not leave the connector's folder" in escapes[0]


def test_the_loopback_connector_folder_passes() -> None:
    loopback = Path(__file__).resolve().parent.parent / "loopback"
    assert (loopback / "inbound" / "__init__.py").is_file()
    assert check_folder(loopback) == []
