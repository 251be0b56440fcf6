"""Tickets and chat messages: submit, list, read, rate; each answered once it is durable.

A request with a `client_msg_id` is done once per user: a repeat answers the original result
(200) and publishes nothing; the same id with other content is 409 `idempotency_conflict`.
The claim (`sdk:claim`) is taken before the publish and holds the ids the message will carry,
so a retry after a crash or a 503 publishes the same message again (the ticket core stores
each key once) instead of a second one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from intake import PUBLISHER, Attachment, Message, utcnow

from ..errors import Conflict, Invalid, NotFound
from ..normalize import (
    chat_message,
    chat_subject,
    check_client_msg_id,
    check_text,
    digest,
    idempotency_key,
    reference,
    satisfaction_key,
    satisfaction_message,
    ticket_message,
)
from ..settings import SdkApp
from ..state import Owner, Session, customer_view
from .runtime import Runtime

SUBJECT_CHARS = 200
PENDING_WAIT_S = 8.0  # a claim this young may still be publishing: wait for its answer
RATING_DAYS = 7
CLOSED = ("resolved", "closed")


class Once:
    """The idempotent part of a request: claim, publish, record, answer."""

    def __init__(self, runtime: Runtime, key: str, request_digest: str) -> None:
        self.runtime = runtime
        self.key = key
        self.digest = request_digest
        self.ids: dict[str, Any] = {}
        self.recorded: dict[str, Any] | None = None

    def answer_write(self, ids: dict[str, Any], result: dict[str, Any]
                     ) -> tuple[str, str, Any]:
        """The claim's answer as a write to make with the request's own (one transaction)."""
        self.recorded = result
        return ("sdk:claim", self.key, {"digest": self.digest, "ids": ids, "result": result,
                                        "at": time.time()})

    async def run(self, prepare: Callable[[dict[str, Any]], None],
                  work: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
                  ) -> tuple[dict[str, Any], bool]:
        """(answer, fresh): `prepare` fills the ids a first attempt chooses, `work` publishes
        and records with them and returns the answer."""
        state = self.runtime.state
        mine: dict[str, Any] = {}
        prepare(mine)
        existing = await state.claim(self.key, self.digest, mine)
        deadline = time.monotonic() + PENDING_WAIT_S
        while existing is not None:
            if existing.get("digest") != self.digest:
                raise Conflict("This client_msg_id was used for other content.",
                               "idempotency_conflict")
            if "result" in existing:
                return existing["result"], False
            if existing.get("failed"):
                break  # its first attempt was answered 503: publish the same message again
            if time.time() - float(existing.get("at", 0)) > PENDING_WAIT_S:
                break  # its first attempt died (or answered 503): publish the same again
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
            existing = await state.claims.get(self.key)
        if existing is None:
            ids = mine  # claimed with them
        else:  # taking over an attempt that failed or died: the same ids again
            ids = dict(existing.get("ids") or mine)
            await state.update_claim(self.key, {"digest": self.digest, "ids": ids,
                                                "at": time.time()})
        try:
            result = await work(ids)
        except BaseException:
            # Not durable (a 503): a retry may publish the same message at once.
            await state.update_claim(self.key, {"digest": self.digest, "ids": ids,
                                                "failed": True, "at": time.time()})
            raise
        if self.recorded is not result:  # not written with the request's own writes
            await state.update_claim(self.key, {"digest": self.digest, "ids": ids,
                                                "result": result, "at": time.time()})
        return result, True


async def publish(runtime: Runtime, request_app: Any, message: Message) -> None:
    await request_app[PUBLISHER].publish(message, timeout=runtime.settings.publish_timeout_s)


def ticket_view(ticket: dict[str, Any]) -> dict[str, Any]:
    return customer_view(ticket)


def owned(ticket: dict[str, Any] | None, session: Session) -> dict[str, Any]:
    """The ticket if it is the session's owner's; another's answers as a missing one."""
    if ticket is None or Owner.from_json(ticket["owner"]) != session.owner:
        raise NotFound("There is no such ticket.")
    return ticket


def check_subject(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return check_text(value, max_chars=SUBJECT_CHARS, name="subject")


def attachment_ids(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid("attachments must be a list of upload ids.", "invalid_attachment",
                      {"attachments": "a list of upload ids"})
    return list(value)


async def resolve_uploads(runtime: Runtime, session: Session, ids: list[str]
                          ) -> list[Attachment]:
    """The uploads named, each the session owner's (another's is as unknown)."""
    found = []
    for upload_id in ids:
        upload = await runtime.state.store.namespace("sdk:upload").get(upload_id)
        if (not isinstance(upload, dict) or Owner.from_json(upload["owner"]) != session.owner
                or float(upload.get("expires_at", 0)) < time.time()):
            raise Invalid(f"There is no upload {upload_id!r}.", "invalid_attachment",
                          {"attachments": f"unknown upload {upload_id}"})
        found.append(Attachment.model_validate(upload["attachment"]))
    return found


def message_view(ids: dict[str, Any], *, direction: str, text: str, client_msg_id: str | None,
                 attachments: list[Attachment], seq: int, author: str | None = None
                 ) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": ids["message_id"], "direction": direction, "text": text,
        "attachments": [{"filename": a.filename, "content_type": a.content_type,
                         "size": a.size, "sha256": a.sha256} for a in attachments],
        "created_at": ids["created_at"], "client_msg_id": client_msg_id, "seq": seq}
    if author is not None:
        view["author"] = author
    return view


async def submit_ticket(runtime: Runtime, request_app: Any, app: SdkApp, session: Session,
                        body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    from ..normalize import clean_fields

    client_msg_id = check_client_msg_id(body.get("client_msg_id", uuid.uuid4().hex))
    text = check_text(body.get("text"), max_chars=app.max_message_chars)
    subject = check_subject(body.get("subject"))
    fields = clean_fields(app, body.get("fields"))
    upload_ids = attachment_ids(body.get("attachments"))
    runtime.limit(runtime.user_limiters[app.id], session.owner.key, "messages")
    attachments = await resolve_uploads(runtime, session, upload_ids)
    key = idempotency_key(session.owner, client_msg_id)
    once = Once(runtime, key, digest("ticket", subject, text, fields, upload_ids))

    def prepare(ids: dict[str, Any]) -> None:
        ids.update(ticket_id=runtime.state.new_id(), message_id=runtime.state.new_id(),
                   created_at=utcnow().isoformat())

    async def work(ids: dict[str, Any]) -> dict[str, Any]:
        message = ticket_message(
            session, key=key, ticket_id=ids["ticket_id"], subject=subject, text=text,
            fields=fields, attachments=attachments, message_id=uuid.UUID(ids["message_id"]),
            received_at=utcnow(), trace_id=ids["message_id"], raw=None)
        await publish(runtime, request_app, message)
        return await record_new_ticket(runtime, session, ids, kind="form", key=key,
                                       subject=subject or chat_subject(text), text=text,
                                       client_msg_id=client_msg_id, attachments=attachments,
                                       once=once)

    return await once.run(prepare, work)


async def record_new_ticket(runtime: Runtime, session: Session, ids: dict[str, Any], *,
                            kind: str, key: str, subject: str, text: str,
                            client_msg_id: str, attachments: list[Attachment],
                            device: str | None = None, once: Once | None = None,
                            ack: bool = False) -> dict[str, Any]:
    """The ticket as the customer sees it at once (`received`), and its first message; the
    answer (the ticket, or with `ack` the message's ack) is the claim's, written with them."""
    state = runtime.state
    ticket = {"id": ids["ticket_id"], "owner": session.owner.as_json(), "app": session.app,
              "reference": reference(key), "number": None, "kind": kind, "subject": subject,
              "status": "received", "created_at": ids["created_at"],
              "updated_at": ids["created_at"], "last_message": None, "read_seq": 0,
              "agent_seqs": [], "progress": [{"status": "received", "at": ids["created_at"]}],
              "satisfaction": None, "ratings": 0}
    message = message_view(ids, direction="customer", text=text, client_msg_id=client_msg_id,
                           attachments=attachments, seq=0)

    answer: dict[str, Any] = {}

    def writes(seq: int) -> list[tuple[str, str, Any]]:
        message["seq"] = seq
        ticket["last_message"] = _last(message)
        answer.clear()
        answer.update(_ack(ids, client_msg_id, seq) if ack else {
            **ticket_view(ticket), "message_id": ids["message_id"], "seq": seq,
            "client_msg_id": client_msg_id})
        found = [state.message_write(ticket["id"], seq, message), *state.ticket_writes(ticket)]
        return [*found, once.answer_write(ids, answer)] if once is not None else found

    await state.append(session.owner, {"type": "message.created", "ticket_id": ticket["id"],
                                       "message": message, "device": device}, then=writes)
    return answer


def _ack(ids: dict[str, Any], client_msg_id: str, seq: int) -> dict[str, Any]:
    return {"message_id": ids["message_id"], "ticket_id": ids["ticket_id"],
            "client_msg_id": client_msg_id, "seq": seq}


def _last(message: dict[str, Any]) -> dict[str, Any]:
    return {"text": message["text"][:200], "direction": message["direction"],
            "created_at": message["created_at"], "seq": message["seq"]}


async def post_message(runtime: Runtime, request_app: Any, app: SdkApp, session: Session,
                       ticket_id: str | None, body: dict[str, Any], *,
                       device: str | None = None) -> tuple[dict[str, Any], bool]:
    """A chat message into a ticket of the user's, or (no ticket) a new chat ticket.

    `device` names the socket it came from: that socket gets its ack, not the echo."""
    client_msg_id = check_client_msg_id(body.get("client_msg_id", uuid.uuid4().hex))
    text = check_text(body.get("text"), max_chars=app.max_message_chars)
    upload_ids = attachment_ids(body.get("attachments"))
    ticket = owned(await runtime.state.ticket(ticket_id), session) if ticket_id else None
    runtime.limit(runtime.user_limiters[app.id], session.owner.key, "messages")
    attachments = await resolve_uploads(runtime, session, upload_ids)
    key = idempotency_key(session.owner, client_msg_id)
    once = Once(runtime, key, digest("message", ticket_id, text, upload_ids))

    def prepare(ids: dict[str, Any]) -> None:
        ids.update(ticket_id=ticket_id or runtime.state.new_id(),
                   message_id=runtime.state.new_id(),
                   created_at=utcnow().isoformat())

    async def work(ids: dict[str, Any]) -> dict[str, Any]:
        subject = ticket.get("subject") if ticket else chat_subject(text)
        message = chat_message(
            session, key=key, ticket_id=ids["ticket_id"], subject=subject, text=text,
            attachments=attachments, message_id=uuid.UUID(ids["message_id"]),
            received_at=utcnow(), trace_id=ids["message_id"], raw=None,
            reference_key=None if ticket else key)
        await publish(runtime, request_app, message)
        if ticket is None:
            return await record_new_ticket(
                runtime, session, ids, kind="chat", key=key, subject=chat_subject(text),
                text=text, client_msg_id=client_msg_id, attachments=attachments,
                device=device, once=once, ack=True)
        view = message_view(ids, direction="customer", text=text, client_msg_id=client_msg_id,
                            attachments=attachments, seq=0)
        answer: dict[str, Any] = {}

        def also(seq: int) -> list[tuple[str, str, Any]]:
            answer.clear()
            answer.update(_ack(ids, client_msg_id, seq))
            return [once.answer_write(ids, answer)]

        await runtime.state.add_message(session.owner, ids["ticket_id"], view, device=device,
                                        also=also)
        return answer

    return await once.run(prepare, work)


async def list_tickets(runtime: Runtime, session: Session, cursor: str | None,
                       limit: int) -> dict[str, Any]:
    tickets = sorted(await runtime.state.tickets_of(session.owner),
                     key=lambda t: (t["updated_at"], t["id"]), reverse=True)
    start = 0
    if cursor:
        try:
            start = max(0, int(cursor))
        except ValueError as exc:
            raise Invalid("The cursor is not one this API gave.", "invalid_cursor",
                          {"cursor": "as given in next"}) from exc
    page = tickets[start:start + limit]
    more = start + limit < len(tickets)
    return {"items": [ticket_view(t) for t in page],
            "next": str(start + limit) if more else None}


async def ticket_detail(runtime: Runtime, session: Session, ticket_id: str) -> dict[str, Any]:
    from .files import with_urls

    ticket = owned(await runtime.state.ticket(ticket_id), session)
    messages = with_urls(runtime.app(session.app), await runtime.state.messages_of(ticket_id))
    return {**ticket_view(ticket), "messages": messages,
            "progress": ticket.get("progress", []),
            "satisfaction": ticket.get("satisfaction")}


async def mark_read(runtime: Runtime, session: Session, ticket_id: str,
                    body: dict[str, Any]) -> dict[str, Any]:
    ticket = owned(await runtime.state.ticket(ticket_id), session)
    seq = body.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise Invalid("seq must be a non-negative integer.", "invalid_seq",
                      {"seq": "a non-negative integer"})
    ticket["read_seq"] = max(int(ticket.get("read_seq", 0)), seq)
    await runtime.state.put_ticket(ticket)
    read = [str(m["id"]) for m in await runtime.state.messages_of(ticket_id)
            if m["direction"] == "agent" and int(m["seq"]) <= ticket["read_seq"]]
    await runtime.receipts.report(session.app, read, "read")
    return ticket_view(ticket)


async def rate(runtime: Runtime, request_app: Any, session: Session, ticket_id: str,
               body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    ticket = owned(await runtime.state.ticket(ticket_id), session)
    score = body.get("score")
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        raise Invalid("score must be an integer from 1 to 5.", "invalid_score",
                      {"score": "an integer 1 to 5"})
    comment = check_text(body.get("comment"), max_chars=2000, name="comment", required=False)
    if ticket.get("status") not in CLOSED:
        raise Conflict("A ticket is rated once it is resolved or closed.", "not_resolved")
    closed_at = next((p["at"] for p in reversed(ticket.get("progress", []))
                      if p["status"] in CLOSED), None)
    if closed_at is not None and _age_days(closed_at) > RATING_DAYS:
        raise Conflict("The rating can be given or changed for 7 days.", "rating_closed")
    previous = ticket.get("satisfaction")
    if previous and previous.get("score") == score and previous.get("comment") == comment:
        return previous, False
    n = int(ticket.get("ratings", 0)) + 1
    key = satisfaction_key(session.owner, ticket_id, n)
    message = satisfaction_message(session, key=key, ticket_id=ticket_id, score=score,
                                   comment=comment, message_id=uuid.uuid4(),
                                   received_at=utcnow(), trace_id=uuid.uuid4().hex)
    await publish(runtime, request_app, message)
    answer = {"score": score, "comment": comment, "via": "sdk",
              "answered_at": utcnow().isoformat()}
    ticket.update(satisfaction=answer, ratings=n)
    await runtime.state.put_ticket(ticket)
    return answer, True


def _age_days(iso: str) -> float:
    from datetime import datetime

    return (utcnow() - datetime.fromisoformat(iso)).total_seconds() / 86_400
