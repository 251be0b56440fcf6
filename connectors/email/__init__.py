"""The email channel: SMTP and IMAP intake, and the SMTP sender of agent replies."""

from .channel import CHANNEL

__all__ = ["CHANNEL"]
