"""The web form channel: hosted, embeddable forms and their submissions."""

from .channel import CHANNEL

__all__ = ["CHANNEL"]
