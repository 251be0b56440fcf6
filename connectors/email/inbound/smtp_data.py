"""Reading one SMTP DATA section: bare-LF lines, the size limit, and only `<CRLF>.<CRLF>` ending it.

aiosmtpd reads DATA in `<CRLF>` lines, so a mail whose lines end in a bare LF (a script, some
old Unix mailers) is one "line" for it and anything over its line limit is refused `500 Line
too long`. Here the data is read in LF-ended pieces instead: a line is at most `line_limit`
bytes whichever way it ends, so a 2 MiB bare-LF mail is taken, as received. Only a `.` line
after a `<CRLF>` ends the data (SMTP smuggling: `<LF>.<LF>` and `<LF>.<CRLF>` are data), and
dot-stuffing is undone only at the start of a `<CRLF>` line, as aiosmtpd 1.4.6 does. Each piece
is appended once and joined once at the end: the cost is linear in the size of the mail.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

TOO_LONG = "500 5.5.2 Line too long (see RFC 5321 4.5.3.1.6)"
TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"


@dataclass(frozen=True)
class DataSection:
    """The data of one transaction (dot-stuffing undone), or the answer refusing it."""

    content: bytes = b""
    refusal: str | None = None


async def read_data(reader: asyncio.StreamReader, *, max_bytes: int) -> DataSection | None:
    """Read up to the ending `.` line; None when the connection ended first.

    A line longer than the reader's limit, or more data than `max_bytes`, is read to the end
    all the same (RFC 5321 4.2.5: the answer comes after the data) and refused; what was read
    is dropped at once so a refused mail holds no memory.
    """
    pieces: list[bytes] = []
    size = 0
    refusal: str | None = None
    tail = b"\r\n"  # the last two bytes read: the data starts at the start of a line
    while True:
        try:
            piece = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            piece = await reader.read(exc.consumed)
            refusal = refusal or TOO_LONG
        except asyncio.IncompleteReadError:
            return None
        line_start = tail == b"\r\n"
        if line_start and piece == b".\r\n":
            break
        tail = piece[-2:] if len(piece) >= 2 else (tail + piece)[-2:]
        size += len(piece)
        if refusal is None and size > max_bytes:
            refusal = TOO_BIG
        if refusal is not None:
            pieces.clear()
            continue
        pieces.append(piece[1:] if line_start and piece[:1] == b"." else piece)
    if refusal is not None:
        return DataSection(refusal=refusal)
    return DataSection(content=b"".join(pieces))


__all__ = ["TOO_BIG", "TOO_LONG", "DataSection", "read_data"]
