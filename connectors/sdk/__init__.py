"""The in-app SDK channel: verified help, tickets and chat for apps, web pages and programs."""

from .channel import CHANNEL

__all__ = ["CHANNEL"]
