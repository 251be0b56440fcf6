"""The loopback test connector: a frame-line inbound and a sender that delivers into a file."""

from .channel import CHANNEL

__all__ = ["CHANNEL"]
