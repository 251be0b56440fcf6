"""The WeChat channel: official-account and WeCom app callbacks, customer-service replies."""

from .channel import CHANNEL

__all__ = ["CHANNEL"]
