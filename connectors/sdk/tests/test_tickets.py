"""Tickets and messages over REST: durable answers, once per client_msg_id, mine only."""

from __future__ import annotations

import uuid
from typing import Any

from connectors.sdk.inbound.runtime import runtime_for
from intake.testing import ContractEdge, RecordingPublisher, RefusingPublisher

from .conftest import Sdk

TICKET = {"client_msg_id": "c-1", "subject": "退货", "text": "耳机想退货",
          "fields": {"category": "售后", "order_no": "2026112500012345",
                     "contact_phone": "+86 138 0013 8000"}}


async def test_a_ticket_is_answered_once_durable_with_its_reference(
        app_client: Sdk, publisher: RecordingPublisher) -> None:
    session = await app_client.signed("u-1")
    status, ticket = await app_client.call("POST", "/tickets", session, TICKET)
    assert status == 201, ticket
    assert ticket["reference"].startswith("SDK-") and ticket["status"] == "received"
    uuid.UUID(ticket["id"])
    [message] = publisher.messages
    assert message.kind == "form_submission" and message.form is not None
    assert message.form.form_id == "demo-app:ticket"
    assert message.form.fields["contact_phone"] == "+8613800138000"
    assert message.thread is not None and message.thread.conversation_id == ticket["id"]
    assert message.channel_data is not None
    assert message.channel_data["reference"] == ticket["reference"]
    assert message.idempotency_key == "sdk:demo-app:user:demo-shop:u-1:c-1"
    # Read-your-writes: listed at once.
    status, mine = await app_client.call("GET", "/tickets", session)
    assert [t["id"] for t in mine["items"]] == [ticket["id"]] and mine["next"] is None
    assert mine["items"][0]["status"] == "received"


async def test_a_repeat_answers_the_original_and_other_content_conflicts(
        app_client: Sdk, publisher: RecordingPublisher) -> None:
    session = await app_client.signed("u-1")
    first = await app_client.call("POST", "/tickets", session, TICKET)
    again = await app_client.call("POST", "/tickets", session, TICKET)
    assert first[0] == 201 and again == (200, first[1])
    other = await app_client.call("POST", "/tickets", session, {**TICKET, "text": "other"})
    assert other[0] == 409 and other[1]["error"] == "idempotency_conflict"
    # Another user's identical client_msg_id is their own.
    bob = await app_client.signed("u-2")
    assert (await app_client.call("POST", "/tickets", bob, TICKET))[0] == 201
    assert len(publisher.messages) == 2


async def test_the_same_client_msg_id_across_ticket_and_message_conflicts(
        app_client: Sdk) -> None:
    session = await app_client.signed("u-1")
    assert (await app_client.call("POST", "/tickets", session, TICKET))[0] == 201
    status, answer = await app_client.call("POST", "/messages", session,
                                           {"client_msg_id": "c-1", "text": "hi"})
    assert (status, answer["error"]) == (409, "idempotency_conflict")


async def test_fields_are_checked_naming_each(app_client: Sdk) -> None:
    session = await app_client.signed("u-1")
    status, answer = await app_client.call("POST", "/tickets", session, {
        "client_msg_id": "c-2", "text": "x",
        "fields": {"order_no": "12ab", "contact_phone": "12", "colour": "red"}})
    assert status == 422
    assert set(answer["fields"]) == {"category", "order_no", "contact_phone", "colour"}
    status, answer = await app_client.call("POST", "/tickets", session, {
        "client_msg_id": "c-3", "text": "x", "fields": {"category": "其他"}})
    assert status == 422 and set(answer["fields"]) == {"category"}


async def test_text_is_kept_as_sent_and_bad_text_refused(
        app_client: Sdk, publisher: RecordingPublisher) -> None:
    session = await app_client.signed("u-1")
    kept = "  \u200b\u202e bidi and zero width \u00e9 e\u0301  "
    assert (await app_client.call("POST", "/messages", session,
                                  {"client_msg_id": "k", "text": kept}))[0] == 201
    assert publisher.messages[0].text == kept
    for text, reason in (("a\x00b", "invalid_text"), ("x" * 5001, "too_long"),
                         (5, "invalid_text"), ("", "missing")):
        status, answer = await app_client.call("POST", "/messages", session,
                                               {"client_msg_id": "z", "text": text})
        assert (status, answer["error"]) == (422, reason), text
    response = await app_client.client.post(
        "/sdk/v1/apps/demo-app/messages", data=b'{"client_msg_id":"s","text":"\\ud800"}',
        headers={"Authorization": f"Bearer {session}", "Content-Type": "application/json"})
    assert response.status == 422 and (await response.json())["error"] == "invalid_text"
    assert (await app_client.call("POST", "/messages", session,
                                  {"client_msg_id": "x" * 65, "text": "a"}))[0] == 422


async def test_bodies_malformed_too_large_or_not_json(app_client: Sdk) -> None:
    session = await app_client.signed("u-1")
    auth = {"Authorization": f"Bearer {session}"}
    url = "/sdk/v1/apps/demo-app/tickets"
    cases: list[tuple[bytes, str, int]] = [
        (b"{not json", "application/json", 400), (b"[1]", "application/json", 400),
        (b'{"text": NaN}', "application/json", 400),
        (b"text=hi", "application/x-www-form-urlencoded", 415),
        (b'{"text": "' + b"a" * (1024 * 1024 + 10) + b'"}', "application/json", 413)]
    for body, content_type, expected in cases:
        response = await app_client.client.post(url, data=body,
                                                headers={**auth, "Content-Type": content_type})
        assert response.status == expected, (body[:20], await response.text())
        assert set(await response.json()) == {"error", "message", "fields"}


async def test_another_users_ticket_is_a_404_like_a_missing_one(app_client: Sdk) -> None:
    alice, bob = await app_client.signed("u-1"), await app_client.signed("u-2")
    _, ticket = await app_client.call("POST", "/tickets", alice, TICKET)
    missing = str(uuid.uuid4())
    for ticket_id in (ticket["id"], missing):
        for method, path, body in (
                ("GET", "", None),
                ("POST", "/messages", {"client_msg_id": "m", "text": "x"}),
                ("POST", "/read", {"seq": 1}),
                ("POST", "/satisfaction", {"score": 5})):
            status, answer = await app_client.call(method, f"/tickets/{ticket_id}{path}", bob,
                                                   body)
            assert (status, answer["error"]) == (404, "not_found"), (ticket_id, path)
    status, mine = await app_client.call("GET", "/tickets", bob)
    assert mine["items"] == []


async def test_an_agent_reply_is_logged_and_counted_unread(edge: ContractEdge,
                                                           app_client: Sdk) -> None:
    from connectors.sdk.outbound import SdkSender
    from intake import Identity, OutboundMessage, SenderKit, Sent, Thread

    session = await app_client.signed("u-1")
    _, ticket = await app_client.call("POST", "/tickets", session, TICKET)
    runtime = runtime_for(edge.client.app)
    sender = SdkSender(SenderKit(channel="sdk", state=runtime.store, runner=None))  # type: ignore[arg-type]
    reply = OutboundMessage(idempotency_key="k", ticket_id="core-1", channel="sdk",
                            account="demo-app", text="您好，已为您退款",
                            to=Identity(kind="sdk_user", value="demo-shop:u-1"),
                            thread=Thread(conversation_id=ticket["id"]))
    assert isinstance(await sender.send(reply), Sent)
    assert isinstance(await sender.send(reply), Sent)  # a resend writes nothing twice
    _, detail = await app_client.call("GET", f"/tickets/{ticket['id']}", session)
    assert [m["direction"] for m in detail["messages"]] == ["customer", "agent"]
    assert detail["unread"] == 1 and detail["messages"][1]["text"] == "您好，已为您退款"
    agent_seq = detail["messages"][1]["seq"]
    assert agent_seq > detail["messages"][0]["seq"]
    _, read = await app_client.call("POST", f"/tickets/{ticket['id']}/read", session,
                                    {"seq": agent_seq})
    assert read["unread"] == 0
    stranger = reply.model_copy(update={"id": uuid.uuid4(), "to": Identity(
        kind="sdk_user", value="demo-shop:u-2")})
    outcome: Any = await sender.send(stranger)
    assert outcome.reason == "unknown_conversation"


async def test_a_rating_waits_for_resolution(app_client: Sdk, edge: ContractEdge,
                                             publisher: RecordingPublisher) -> None:
    session = await app_client.signed("u-1")
    _, ticket = await app_client.call("POST", "/tickets", session, TICKET)
    path = f"/tickets/{ticket['id']}/satisfaction"
    assert (await app_client.call("POST", path, session, {"score": 5}))[0] == 409
    for bad in (0, 6, 4.5, True, "5"):
        assert (await app_client.call("POST", path, session, {"score": bad}))[0] == 422
    state = runtime_for(edge.client.app).state
    stored = await state.ticket(ticket["id"])
    assert stored is not None
    stored["status"] = "resolved"
    stored["progress"].append({"status": "resolved", "at": stored["created_at"]})
    await state.put_ticket(stored)
    status, answer = await app_client.call("POST", path, session, {"score": 5, "comment": "很满意"})
    assert status == 201 and answer["score"] == 5
    event = publisher.messages[-1]
    assert event.kind == "event" and event.event is not None
    assert event.event.type == "satisfaction" and event.event.data["score"] == 5
    assert event.idempotency_key.endswith(f":satisfaction:{ticket['id']}:1")


async def test_nothing_is_answered_success_unless_durable(tmp_path: Any, monkeypatch: Any) -> None:
    from connectors.sdk import CHANNEL

    from .conftest import EXAMPLE

    monkeypatch.setenv("INTAKE_DATA_DIR", str(tmp_path))
    edge = await ContractEdge.start(CHANNEL, EXAMPLE, RefusingPublisher())
    try:
        sdk = Sdk(edge, "demo-app")
        session = await sdk.signed("u-1")
        status, _ = await sdk.call("POST", "/tickets", session, TICKET)
        assert status == 503
        status, mine = await sdk.call("GET", "/tickets", session)
        assert mine["items"] == []
    finally:
        await edge.close()


async def test_a_retry_after_a_503_publishes_the_same_message_at_once(
        app_client: Sdk, publisher: RecordingPublisher, monkeypatch: Any) -> None:
    session = await app_client.signed("u-1")
    with monkeypatch.context() as patch:
        patch.setattr(publisher, "publish", RefusingPublisher().publish)
        status, _ = await app_client.call("POST", "/tickets", session, TICKET)
    assert status == 503
    status, ticket = await app_client.call("POST", "/tickets", session, TICKET)
    assert status == 201 and len(publisher.messages) == 1
    assert publisher.messages[0].thread is not None
    assert publisher.messages[0].thread.conversation_id == ticket["id"]


async def test_over_the_user_limit_is_429_and_nothing_is_stored(
        app_client: Sdk, publisher: RecordingPublisher) -> None:
    session = await app_client.signed("u-1")
    answers = [await app_client.call("POST", "/messages", session,
                                     {"client_msg_id": f"m{n}", "text": "hi"})
               for n in range(30)]
    accepted = [a for a in answers if a[0] == 201]
    refused = [a for a in answers if a[0] == 429]
    assert len(accepted) + len(refused) == 30 and 20 <= len(accepted) < 30
    assert all(a[1]["error"] == "rate_limited" for a in refused)
    assert len(publisher.messages) == len(accepted)
