"""structlog JSON lines with `service`, `trace_id` and `idempotency_key` where known."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_configured = False


def configure_logging(level: str = "info") -> None:
    global _configured
    if _configured:
        return
    _configured = True
    logging.basicConfig(format="%(message)s", stream=sys.stderr,
                        level=getattr(logging, level.upper(), logging.INFO))
    for noisy in ("aiormq", "aio_pika", "aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(**bind: Any) -> Any:
    """A logger bound lazily: its configuration is taken at its first line, not now.

    So a module may keep `log = get_logger(...)` at import time, before `configure_logging`
    runs, and every line is still JSON (structlog's proxy builds the real logger on first use,
    and caches it only once the configuration says so).
    """
    return structlog.get_logger(**bind)


def bind_message(trace_id: str | None, idempotency_key: str | None) -> None:
    """Bind the message's ids to every log line of the current task."""
    structlog.contextvars.bind_contextvars(trace_id=trace_id, idempotency_key=idempotency_key)
