"""Load shapes: closed loop (C clients, each sends when answered) and open loop (on schedule).

A sender is `async send(i, scheduled) -> None`: request number i, started no earlier than the
wall-clock time `scheduled`; it records its own outcome. The open loop starts request i at
`start + i / rate` whether or not earlier ones were answered, so a slow gateway shows as
latency (measured from the scheduled time: no coordinated omission) instead of a slower
sender.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Sender = Callable[[int, float], Awaitable[None]]


def schedule(n: int, rate: float, start: float) -> list[float]:
    """The send times of an open loop: n requests at `rate` per second from `start`."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    return [start + i / rate for i in range(n)]


@dataclass
class LoopStats:
    started: float  # wall clock of the first send
    finished: float  # wall clock when the last answer came
    max_lag_s: float = 0.0  # open loop: the worst delay of a send behind its schedule


async def open_loop(send: Sender, n: int, rate: float, *,
                    clock: Callable[[], float] = time.time,
                    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> LoopStats:
    """Start request i at its scheduled time, never waiting for earlier answers."""
    start = clock() + 0.05
    times = schedule(n, rate, start)
    tasks: set[asyncio.Task[None]] = set()
    lag = 0.0
    for i, due in enumerate(times):
        delay = due - clock()
        if delay > 0:
            await sleep(delay)
        else:
            lag = max(lag, -delay)
        task = asyncio.create_task(send(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return LoopStats(started=start, finished=clock(), max_lag_s=lag)


async def closed_loop(send: Sender, n: int, concurrency: int, *,
                      clock: Callable[[], float] = time.time) -> LoopStats:
    """`concurrency` clients, each sending its next request as soon as the last is answered."""
    counter = iter(range(n))
    start = clock()

    async def client() -> None:
        for i in counter:
            await send(i, clock())

    await asyncio.gather(*(client() for _ in range(max(1, min(concurrency, n)))))
    return LoopStats(started=start, finished=clock())
