"""The Python client of the intake gateway's in-app SDK channel."""

from .blocking import BlockingClient
from .client import Chat, IntakeClient, IntakeError, user_hash

__all__ = ["BlockingClient", "Chat", "IntakeClient", "IntakeError", "user_hash"]
