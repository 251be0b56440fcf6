"""A blocking facade for GUI programs: the async client on an event loop of its own thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .client import IntakeClient

T = TypeVar("T")


class BlockingClient:
    """`BlockingClient(base_url, app_key, identify=…)`; each method waits for its answer.

    Chat events are handed to `on_message(handler)` on the client's own thread: a GUI program
    posts them to its UI thread (Qt signals, `tkinter.after`).
    """

    def __init__(self, base_url: str, app_key: str, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="intake-sdk")
        self.thread.start()
        self.client: IntakeClient = self._run(self._make(base_url, app_key, options))

    @staticmethod
    async def _make(base_url: str, app_key: str, options: dict[str, Any]) -> IntakeClient:
        return IntakeClient(base_url, app_key, **options)

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def submit_ticket(self, **kwargs: Any) -> dict[str, Any]:
        return self._run(self.client.submit_ticket(**kwargs))

    def tickets(self) -> dict[str, Any]:
        return self._run(self.client.tickets())

    def ticket(self, ticket_id: str) -> dict[str, Any]:
        return self._run(self.client.ticket(ticket_id))

    def search_faq(self, q: str) -> dict[str, Any]:
        return self._run(self.client.search_faq(q))

    def on_message(self, handler: Callable[[dict[str, Any]], Any]) -> None:
        async def register() -> None:
            (await self.client.chat()).on_message(handler)
        self._run(register())

    def send(self, text: str, ticket_id: str | None = None) -> dict[str, Any]:
        async def send() -> dict[str, Any]:
            return await (await self.client.chat()).send(text, ticket_id=ticket_id)
        return self._run(send())

    def close(self) -> None:
        self._run(self.client.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
