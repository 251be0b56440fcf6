"""SdkSender: an agent reply from `intake.outbound.sdk` written to the user's log.

The reply's `thread.conversation_id` is the SDK ticket id; the ticket's owner must be the
reply's `to` (the customer's `sdk_user` or `sdk_device`), else it is `failed`
(`unknown_conversation`). Writing the reply is idempotent by its outbound id, so a send whose
outcome was lost may be made again (`resend_unknown`): the app polls `GET /tickets/{id}` or
follows its socket and sees it once.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from intake import (
    BUS,
    DeliveryResult,
    Failed,
    OutboundMessage,
    SenderKit,
    Sent,
    get_logger,
    utcnow,
)

from .state import Owner, SdkState, customer_view

log = get_logger(service="sdk", component="outbound")
DELIVERED = "sdk:delivered"  # outbound id → the seq its reply got in the user's log


class SdkSender:
    resend_unknown = True
    max_attempts = 5

    def __init__(self, kit: SenderKit) -> None:
        self.kit = kit
        self.state = SdkState(kit.state)

    async def send(self, message: OutboundMessage) -> Sent | Failed:
        ticket_id = message.thread.conversation_id if message.thread else None
        ticket = await self.state.ticket(ticket_id) if ticket_id else None
        if ticket is None:
            return Failed("unknown_conversation", f"no SDK ticket {ticket_id!r}")
        owner = Owner.from_json(ticket["owner"])
        if not _addressed_to(owner, message, ticket):
            return Failed("unknown_conversation", "the ticket belongs to someone else")
        delivered = self.state.store.namespace(DELIVERED)
        seq = await delivered.get(str(message.id))
        if seq is None:
            view: dict[str, Any] = {
                "id": str(message.id), "direction": "agent", "text": message.text,
                "attachments": [{"filename": a.filename, "content_type": a.content_type,
                                 "size": a.size, "sha256": a.sha256}
                                for a in message.attachments],
                "created_at": message.created_at.isoformat(), "client_msg_id": None,
                "author": "agent", "seq": 0}
            # The outbound id is remembered in the log's own transaction (one write, not two;
            # about a third of the sender's state-store time).
            seq = await self.state.add_message(
                owner, ticket["id"], view, ticket=ticket,
                also=lambda seq: [(DELIVERED, str(message.id), seq)])
        return Sent(provider_message_id=f"{owner.key}:{seq}")


def _addressed_to(owner: Owner, message: OutboundMessage, ticket: dict[str, Any]) -> bool:
    if message.account != ticket.get("app"):
        return False
    if owner.identity.kind == message.to.kind and owner.identity.value == message.to.value:
        return True
    # A device's ticket moved to the user who signed in on it: replies may still name the
    # device (the customer record holds both identities).
    return message.to.kind == "sdk_device" and owner.kind == "user"



class TicketEvent(BaseModel):
    """An event of the ticket core's log as relayed to `intake.events` (DESIGN's envelope)."""

    model_config = ConfigDict(extra="allow")

    id: int
    type: str
    occurred_at: str
    desk: str | None = None
    ticket_id: str | None = None
    customer_id: str | None = None
    actor: str = "system"
    data: dict[str, Any] = Field(default_factory=dict)


class TicketEvents:
    """Status and number changes of SDK tickets, from `intake.sdk.events` (bound `ticket.#`).

    `ticket.created` of an SDK message names its SDK ticket by `conversation_id`; the core's
    ticket id is remembered (`sdk:core`) for the `ticket.updated` events that follow. A
    follow-up ticket (after a close) is the conversation's latest: its number is shown. Each
    change is appended to the owner's log as `ticket.updated`; an event seen before (its id
    not above the ticket's last) changes nothing, so redeliveries are harmless.
    """

    def __init__(self, state: SdkState) -> None:
        self.state = state
        self.core = state.store.namespace("sdk:core")

    async def handle(self, event: TicketEvent) -> None:
        if event.ticket_id is None or not event.type.startswith("ticket."):
            return
        if event.type == "ticket.created" and event.data.get("channel") != "sdk":
            return  # every channel's tickets pass here: no state-store read for the others
        sdk_id = await self.core.get(event.ticket_id)
        if sdk_id is None and event.type == "ticket.created":
            if event.data.get("channel") != "sdk" or not event.data.get("conversation_id"):
                return
            sdk_id = str(event.data["conversation_id"])
            await self.core.put(event.ticket_id, sdk_id)
        if sdk_id is None:
            return
        ticket = await self.state.ticket(sdk_id)
        if ticket is None or int(ticket.get("last_event_id", 0)) >= event.id:
            return
        status = event.data.get("status")
        number = event.data.get("ticket_number")
        changed: dict[str, Any] = {}
        if event.type == "ticket.created" or event.ticket_id == ticket.get("core_ticket_id"):
            if number is not None and number != ticket.get("number"):
                changed["number"] = number
            ticket["core_ticket_id"] = event.ticket_id
        if isinstance(status, str) and status != ticket.get("status") and (
                event.ticket_id == ticket.get("core_ticket_id")):
            changed["status"] = status
            ticket["progress"] = [*ticket.get("progress", []),
                                  {"status": status, "at": event.occurred_at}]
        ticket.update(changed, last_event_id=event.id)
        if changed:
            ticket["updated_at"] = event.occurred_at
        await self.state.put_ticket(ticket)
        if changed:
            owner = Owner.from_json(ticket["owner"])
            await self.state.append(owner, {"type": "ticket.updated", "ticket_id": sdk_id,
                                            "ticket": customer_view(ticket),
                                            "changes": changed})


async def consume_ticket_events(app: web.Application) -> None:
    """The `Task` that runs `TicketEvents` on `intake.sdk.events` for the service's life."""
    from .inbound.runtime import RUNTIME

    runtime = app[RUNTIME]
    events = TicketEvents(runtime.state)
    app[BUS].consume("sdk.events", events.handle, TicketEvent, binding=("events", "ticket.#"))
    await asyncio.Event().wait()


RECEIPT_RANK = {"delivered": 1, "read": 2}


class Receipts:
    """`delivered` once a socket got an agent's reply, `read` up to the user's read marker.

    Each is published to `intake.delivery` once per reply and status (`sdk:receipt` remembers
    the highest reported), after the `sent` of the sender; the ticket core keeps the highest
    (read > delivered > sent within an attempt). Best effort: a receipt the broker did not
    take is logged and reported again with the next one.
    """

    def __init__(self, state: SdkState, bus: Any) -> None:
        self.bus = bus
        self.reported = state.store.namespace("sdk:receipt")

    async def report(self, app_id: str, outbound_ids: list[str], status: str) -> None:
        if self.bus is None:
            return
        for outbound_id in outbound_ids:
            before = await self.reported.get(outbound_id)
            if before is not None and RECEIPT_RANK.get(str(before), 0) >= RECEIPT_RANK[status]:
                continue
            result = DeliveryResult(outbound_id=uuid.UUID(outbound_id), channel="sdk",
                                    account=app_id, status=status,  # type: ignore[arg-type]
                                    occurred_at=utcnow())
            try:
                await self.bus.publish("delivery", f"sdk.{app_id}",
                                       result.model_dump_json().encode(),
                                       message_id=f"{outbound_id}:{status}")
            except Exception as exc:  # the next receipt or read reports it again
                log.warning("receipt_not_published", outbound_id=outbound_id, status=status,
                            error=repr(exc)[:200])
                return
            await self.reported.put(outbound_id, status)


class FanoutNote(BaseModel):
    """`intake.sdk.fanout`: the owner key whose log grew, and the replica that wrote it."""

    owner: str
    replica: str


class LiveFanout:
    """Wakes every replica's sockets of a user whose log grew on any replica.

    Each replica declares a transient queue `intake.sdk.fanout.<replica>` bound to the fanout
    exchange `intake.sdk.fanout`; each append publishes a note. Best effort: a note lost (the
    broker away) is made up by the sockets' slow poll of the log, which is the truth.
    """

    def __init__(self, bus: Any, wake: Any) -> None:
        self.bus = bus
        self.wake = wake
        self.replica = uuid.uuid4().hex[:12]
        self.queue = f"sdk.fanout.{self.replica}"
        self.pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.bus.declare_exchange("sdk.fanout", "fanout")
        await self.bus.declare_queue(self.queue, bindings=[("sdk.fanout", "")], transient=True)
        self.bus.consume(self.queue, self.handle, FanoutNote)

    async def handle(self, note: FanoutNote) -> None:
        if note.replica != self.replica:
            self.wake(note.owner)

    def appended(self, owner_key: str) -> None:
        task = asyncio.get_running_loop().create_task(self._announce(owner_key))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _announce(self, owner_key: str) -> None:
        body = FanoutNote(owner=owner_key, replica=self.replica).model_dump_json().encode()
        try:
            await self.bus.publish("sdk.fanout", "", body)
        except Exception as exc:  # the other replicas' poll finds it
            log.debug("fanout_not_published", error=repr(exc)[:200])


PRUNE_EVERY_S = 3600.0


async def prune_forever(app: web.Application) -> None:
    """The `Task` that prunes the SDK's state hourly (SdkState.prune)."""
    from .inbound.runtime import RUNTIME

    while True:
        try:
            removed = await app[RUNTIME].state.prune()
            if removed:
                log.info("sdk_state_pruned", removed=removed)
        except Exception:  # the next hour tries again
            log.exception("sdk_state_prune_failed")
        await asyncio.sleep(PRUNE_EVERY_S)
