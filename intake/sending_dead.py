"""Outbound messages a sender refused for good: dead-lettered, and sent again after a replay.

A sender returns `Failed(reason, detail, dead_letter=True)` when the provider refused a message
for good and nothing went out (an SMTP relay's 5xx). The runner (`sending.py`) then puts the
outbound message in `intake.dead` as the ticket core published it, and its ledger entry
(`done`) keeps the dead letter's id. `intake dlq replay` republishes the very message: its id
is `done` in the ledger, but the `dead_id` there says a fix may turn that refusal into a send,
so it is sent again, once per dead letter, as a later attempt.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .claims import this_process
from .message import OutboundMessage
from .state import StateNamespace, StateStore

if TYPE_CHECKING:
    from .sending import Failed


async def dead_letter_outbound(bus: Any, message: OutboundMessage, outcome: Failed,
                               log: Any) -> str | None:
    """`message` in `intake.dead` (exchange `outbound`, key `<channel>.<account>`, so a replay
    comes back to the channel's queue), reason and detail in its headers; the dead letter's
    id, or None when the broker did not take it."""
    try:
        return str(await bus.dead_letter(
            message.model_dump_json(by_alias=True).encode(), outcome.reason,
            outcome.detail or outcome.reason, queue=bus.names(f"outbound.{message.channel}"),
            exchange=bus.names("outbound"), routing_key=f"{message.channel}.{message.account}"))
    except Exception as exc:
        log.warning("outbound_dead_letter_failed", outbound_id=str(message.id),
                    error=repr(exc)[:300])
        return None


async def claim_replay(state: StateStore, ledger: StateNamespace, message: OutboundMessage,
                       entry: dict[str, Any]) -> int | None:
    """The attempt number to send a replayed message under, or None when it is not this
    delivery's to send.

    The claim (`resent:<channel>`, keyed by outbound id and dead letter) and the ledger's new
    `sending` entry are written in one transaction, so two deliveries of one letter (two
    replicas) send once. A broker redelivery of the original message between its ledger entry
    and its ack is sent again too: harmless, the provider refused it and nothing went out.
    """
    key = str(message.id)
    attempt = int(entry.get("result", {}).get("attempt", entry.get("attempt", 1))) + 1
    sending = {"state": "sending", "attempt": attempt, "at": time.time(),
               "owner": this_process()}
    claimed = await state.put_new_with(f"resent:{message.channel}", f"{key}:{entry['dead_id']}",
                                       {"at": time.time()}, [(ledger.name, key, sending)])
    return attempt if claimed else None


__all__ = ["claim_replay", "dead_letter_outbound"]
