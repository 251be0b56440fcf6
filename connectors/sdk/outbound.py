"""SdkSender: an agent reply from `intake.outbound.sdk` written to the user's log.

The reply's `thread.conversation_id` is the SDK ticket id; the ticket's owner must be the
reply's `to` (the customer's `sdk_user` or `sdk_device`), else it is `failed`
(`unknown_conversation`). Writing the reply is idempotent by its outbound id, so a send whose
outcome was lost may be made again (`resend_unknown`): the app polls `GET /tickets/{id}` or
follows its socket and sees it once.
"""

from __future__ import annotations

from typing import Any

from intake import Failed, OutboundMessage, SenderKit, Sent

from .state import Owner, SdkState


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
        delivered = self.state.store.namespace("sdk:delivered")
        seq = await delivered.get(str(message.id))
        if seq is None:
            view: dict[str, Any] = {
                "id": str(message.id), "direction": "agent", "text": message.text,
                "attachments": [{"filename": a.filename, "content_type": a.content_type,
                                 "size": a.size, "sha256": a.sha256}
                                for a in message.attachments],
                "created_at": message.created_at.isoformat(), "client_msg_id": None,
                "author": "agent", "seq": 0}
            seq = await self.state.add_message(owner, ticket["id"], view)
            await delivered.put(str(message.id), seq)
        return Sent(provider_message_id=f"{owner.key}:{seq}")


def _addressed_to(owner: Owner, message: OutboundMessage, ticket: dict[str, Any]) -> bool:
    if message.account != ticket.get("app"):
        return False
    if owner.identity.kind == message.to.kind and owner.identity.value == message.to.value:
        return True
    # A device's ticket moved to the user who signed in on it: replies may still name the
    # device (the customer record holds both identities).
    return message.to.kind == "sdk_device" and owner.kind == "user"

