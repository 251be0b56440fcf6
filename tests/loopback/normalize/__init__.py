"""Pure functions from a parsed loopback frame to an intake Message (a package, as a
connector with several transports has)."""

from .frame import Frame, parse_frame, to_message

__all__ = ["Frame", "parse_frame", "to_message"]
