"""An IMAP intake in a process of its own that SIGKILLs itself right after its N-th publish: the
mail is durable, its `\\Seen` and cursor not yet written (`test_imap.py`'s crash test).

`python -m connectors.email.tests.imap_child PORT STATE_DB KEYS_FILE N`
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from pathlib import Path

from connectors.email.inbound import Deliverer, ParserPool
from connectors.email.inbound.imap import MailboxPoller
from connectors.email.settings import EmailAccounts, EmailSettings
from connectors.email.state import EmailState
from intake import Message, StateStore
from intake.testing import MemoryBlobStore


class KillingPublisher:
    """Writes each key durably (as the broker's confirm would be), then dies at the N-th."""

    def __init__(self, keys: Path, kill_at: int) -> None:
        self.keys = keys
        self.kill_at = kill_at
        self.count = 0

    async def publish(self, message: Message, exchange: str = "inbound", *,
                      timeout: float | None = None) -> None:
        with self.keys.open("a", encoding="utf-8") as out:
            out.write(message.idempotency_key + "\n")
            out.flush()
            os.fsync(out.fileno())
        self.count += 1
        if self.count == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


async def main(port: int, state_db: str, keys: Path, kill_at: int) -> None:
    from .test_imap import account

    acct = account(port)
    async with StateStore(f"sqlite+aiosqlite:///{state_db}") as store:
        deliverer = Deliverer(KillingPublisher(keys, kill_at), MemoryBlobStore(),
                              EmailAccounts(accounts=[acct]), EmailSettings(),
                              ParserPool(0, 30.0))
        poller = MailboxPoller(acct, deliverer, EmailState(store).cursors(acct.id),
                               asyncio.get_running_loop(), threading.Event())
        threading.Thread(target=poller.run, daemon=True).start()
        await asyncio.sleep(60)  # killed long before


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])))
