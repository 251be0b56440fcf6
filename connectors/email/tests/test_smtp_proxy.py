"""PROXY protocol (v1 and v2) on the SMTP listener, as a load balancer sends it: the client it
names is the one the envelope, the trusted relays and the per-client limit see."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct

from intake.testing import RecordingPublisher

from .test_smtp import MAIL, Listener, listening

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(source: str) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 40000 2525\r\n".encode()


def v2(source: str) -> bytes:
    addresses = (ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address("127.0.0.1").packed
                 + struct.pack("!HH", 40000, 2525))
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


def converse(port: int, header: bytes, lines: list[bytes]) -> list[bytes]:
    """Send the PROXY header, then each line, collecting the server's answers."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(header)
        reader = sock.makefile("rb")
        answers.append(reader.readline())
        for line in lines:
            sock.sendall(line)
            answer = reader.readline()
            while answer[3:4] == b"-":
                answer = reader.readline()
            answers.append(answer)
    return answers


SESSION = [b"EHLO lb.example\r\n", b"MAIL FROM:<li@example.cn>\r\n",
           b"RCPT TO:<support@shop.example>\r\n", b"DATA\r\n", MAIL + b".\r\n", b"QUIT\r\n"]


async def proxied(**settings: object) -> Listener:
    return await listening(RecordingPublisher(), parse_workers=0, proxy_protocol=True,
                           **settings)


async def closed(listener: Listener) -> None:
    listener.server.close()
    await listener.server.wait_closed()


async def test_v1_and_v2_headers_name_the_client_in_the_envelope() -> None:
    listener = await proxied()
    try:
        for header in (v1("203.0.113.7"), v2("198.51.100.9")):
            answers = await asyncio.to_thread(converse, listener.port, header, SESSION)
            assert answers[0].startswith(b"220") and answers[5].startswith(b"250"), answers
        clients = [m.channel_data["envelope"]["client"] for m in listener.published]
        assert clients == ["203.0.113.7", "198.51.100.9"]
    finally:
        await closed(listener)


async def test_without_a_header_the_session_gets_no_greeting() -> None:
    listener = await proxied()
    try:
        answers = await asyncio.to_thread(converse, listener.port, b"EHLO direct\r\n", [])
        assert answers == [b""]  # closed without a 220
        assert listener.published == []
    finally:
        await closed(listener)


async def test_trusted_relays_apply_to_the_proxied_client() -> None:
    listener = await proxied(trusted_relays="203.0.113.0/24")
    try:
        refused = await asyncio.to_thread(converse, listener.port, v1("198.51.100.9"), [])
        assert refused[0].startswith(b"554 5.7.1"), refused
        allowed = await asyncio.to_thread(converse, listener.port, v1("203.0.113.7"), SESSION)
        assert allowed[5].startswith(b"250"), allowed
        assert len(listener.published) == 1
    finally:
        await closed(listener)


async def test_the_per_client_limit_counts_proxied_clients_not_the_balancer() -> None:
    listener = await proxied(max_sessions_per_client=1)
    try:
        first = socket.create_connection(("127.0.0.1", listener.port), timeout=10)
        first.sendall(v1("203.0.113.7"))
        greeting = await asyncio.to_thread(first.makefile("rb").readline)
        assert greeting.startswith(b"220")
        same = await asyncio.to_thread(converse, listener.port, v1("203.0.113.7"), [])
        other = await asyncio.to_thread(converse, listener.port, v1("203.0.113.8"), SESSION)
        assert same[0].startswith(b"421"), same
        assert other[5].startswith(b"250"), other  # the balancer's address is no limit
        first.close()
    finally:
        await closed(listener)
