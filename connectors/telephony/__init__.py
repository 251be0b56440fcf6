"""The telephony channel."""

from .channel import CHANNEL

__all__ = ["CHANNEL"]
