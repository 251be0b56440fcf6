"""Every one of CPython's test messages becomes a valid message (RT refused 9 of them)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.email.inbound import parse_mail
from connectors.email.normalize import Envelope, MailPolicy
from intake import Message

CORPUS = sorted((Path(__file__).resolve().parent / "cpython_mail").glob("msg_*.txt"))
POLICY = MailPolicy(account="support@shop.example", address="support@shop.example",
                    domain="shop.example", our_addresses=frozenset({"support@shop.example"}),
                    our_domains=frozenset({"shop.example"}), forwarders=frozenset(),
                    tag_patterns=(r"\[#(?P<number>\d{1,12})\]",), auto_reply_subjects=())


def test_the_corpus_is_there() -> None:
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_each_cpython_message_is_read(path: Path) -> None:
    envelope = Envelope(mail_from="sender@example.org", rcpt_to=("support@shop.example",))
    result = parse_mail(path.read_bytes(), envelope, [(POLICY, None)],
                        datetime(2026, 12, 5, tzinfo=UTC), None)
    assert not isinstance(result, str), result  # read, not a parse_error
    [parsed] = result
    message = Message.model_validate_json(parsed.message.model_dump_json())
    assert message.sender.identities, "From, or the envelope sender without one"
    assert len(parsed.blobs) == len(message.attachments)
