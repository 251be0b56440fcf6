"""The Prometheus metrics every service exports on `/metrics`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_IN = Counter("intake_messages_in_total", "Messages received", ["service", "channel"])
MESSAGES_OUT = Counter("intake_messages_out_total", "Messages published or persisted",
                       ["service", "channel"])
ERRORS = Counter("intake_errors_total", "Failures by reason", ["service", "reason"])
IGNORED = Counter("intake_ignored_total", "Events dropped on purpose", ["channel", "reason"])
DEAD_LETTERED = Counter("intake_dead_lettered_total", "Messages sent to intake.dead",
                        ["service", "reason"])
OUTBOX_DEPTH = Gauge("intake_outbox_depth", "Messages waiting in the local outbox", ["service"])
BROKER_CONNECTED = Gauge("intake_broker_connected", "1 when the broker connection is open",
                         ["service"])
COMPONENT_UP = Gauge("intake_component_up",
                     "1 while a supervised component (connection, consumer, listener, task) is up",
                     ["service", "component"])
HANDLER_SECONDS = Histogram(
    "intake_handler_seconds", "Time to handle one message or request", ["service", "stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
