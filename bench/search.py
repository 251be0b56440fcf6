"""Search latency over a seeded corpus: `python -m bench.search [--tickets N] [--url URL]`.

Seeds N tickets (Chinese, English and mixed texts, order numbers, 20 desks) through the ticket
store's own write path, then runs a fixed mix of queries through `search_tickets` (the
endpoint's query, without HTTP): two- to six-character Chinese terms, order numbers by prefix,
English words, desk-scoped ones, and single common characters reported apart (they match most
of the corpus: ranking all of them is the expensive case). Prints p50/p99 per kind as JSON.
The issue's `agent-api` scenario (a million tickets in PostgreSQL, over HTTP) is not this.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from intake.message import Message
from intake.search_text import parse_query
from ticket_core.db import make_engine, migrate
from ticket_core.search import search_tickets
from ticket_core.store import TicketStore
from ticket_core.tests.builders import message, route

PHRASES_ZH = ["我要退款，订单已签收", "发票什么时候开", "物流一直没有更新", "退货地址是哪里",
              "商品有质量问题", "请尽快处理我的投诉", "快递员态度不好", "换货需要多久",
              "會員積分怎麼用", "退貨運費誰出"]
PHRASES_EN = ["Where is my refund", "The invoice is wrong", "Parcel arrived damaged",
              "Please cancel my order", "Shipping address change", "Warranty claim for laptop"]
QUERIES = {
    "chinese": ["退款", "发票", "物流", "退货地址", "质量问题", "尽快处理", "快递员态度",
                "积分", "運費", "换货需要多久"],
    "order_number": ["2026120", "20261206-00", "SF10", "sf1234"],
    "english": ["refund", "invoice", "damaged", "warranty laptop", '"cancel my order"'],
    "desk_scoped": ["退款", "refund", "物流"],
    "single_character": ["退", "的", "单"],
}


def corpus(count: int, seed: int = 17) -> list[Message]:
    rng = random.Random(seed)
    messages = []
    for i in range(count):
        zh = rng.random() < 0.7
        text = " ".join(rng.choice(PHRASES_ZH if zh else PHRASES_EN) for _ in range(3))
        text += f" 订单号 202612{i % 30:02d}-{i % 10_000:04d} SF{rng.randrange(10**9)}"
        messages.append(message(f"bench-search-{i}", text=text,
                                subject=rng.choice(PHRASES_ZH + PHRASES_EN)[:12],
                                email=f"c{i % 2_000}@example.cn",
                                routed=route(f"desk{i % 20}")))
    return messages


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(url: str, tickets: int, rounds: int = 5) -> dict[str, Any]:
    """Seed `tickets` tickets at `url` (an empty database) and time the query mix."""
    await migrate(url)
    engine = make_engine(url)
    store = TicketStore(engine)
    try:
        seeded = time.perf_counter()
        messages = corpus(tickets)
        for start in range(0, len(messages), 100):
            await store.persist_many(messages[start:start + 100])
        seed_s = time.perf_counter() - seeded
        report: dict[str, Any] = {"tickets": tickets, "seed_s": round(seed_s, 2),
                                  "dialect": engine.dialect.name}
        for kind, queries in QUERIES.items():
            times: list[float] = []
            for _ in range(rounds):
                for q in queries:
                    desks = ["desk3"] if kind == "desk_scoped" else None
                    started = time.perf_counter()
                    await search_tickets(store, parse_query(q), desks=desks, limit=50)
                    times.append((time.perf_counter() - started) * 1000)
            report[kind] = {"p50_ms": round(percentile(times, 0.5), 2),
                            "p99_ms": round(percentile(times, 0.99), 2), "n": len(times)}
        return report
    finally:
        await store.close()
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=5_000)
    parser.add_argument("--url", help="an EMPTY database (default: a temporary SQLite file)")
    args = parser.parse_args()
    url = args.url or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'search.sqlite3'}"
    print(json.dumps(asyncio.run(measure(url, args.tickets)), indent=2))


if __name__ == "__main__":
    main()
