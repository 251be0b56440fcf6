"""`python -m intake_sdk chat --base-url … --app-key … --user … --secret …`: chat in a terminal.

The secret signs the user id here, as a company's backend would: for demos and tests only.
Lines typed are sent (queued while offline, sent once on reconnect); agent replies print as
they come. Ctrl-D or Ctrl-C ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from .client import IntakeClient, user_hash


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m intake_sdk")
    commands = parser.add_subparsers(dest="command", required=True)
    chat = commands.add_parser("chat", help="chat in the terminal as a user")
    chat.add_argument("--base-url", default="http://127.0.0.1:8002")
    chat.add_argument("--app-key", required=True)
    chat.add_argument("--user", help="the user id (omit for an anonymous visitor)")
    chat.add_argument("--secret", help="the app's identity secret (demo apps only)")
    chat.add_argument("--state", default=":memory:", help="a file for the offline queue")
    return parser.parse_args(argv)


async def chat(args: argparse.Namespace) -> int:
    who: dict[str, str] | None = None
    if args.user:
        who = {"user_id": args.user}
        if args.secret:
            who["user_hash"] = user_hash(args.secret, args.user)
    client = IntakeClient(args.base_url, args.app_key, identify=lambda: who,
                          state_path=args.state)
    ticket: dict[str, Any] = {}

    def show(frame: dict[str, Any]) -> None:
        message = frame["message"]
        who = "客服" if message["direction"] == "agent" else "我"
        print(f"\n[{who}] {message['text']}", flush=True)

    try:
        session = await client.chat()
        session.on_message(show)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return 0
            text = line.rstrip("\n")
            if not text.strip():
                continue
            ack = await session.send(text, ticket_id=ticket.get("id"))
            ticket.setdefault("id", ack["ticket_id"])
            print(f"  ✓ {ack['seq']}", flush=True)
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return asyncio.run(chat(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
