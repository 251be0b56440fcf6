"""The loopback's inbound transports (a package, one module each, as STYLE.md allows)."""

from .frames import FrameEdge

__all__ = ["FrameEdge"]
