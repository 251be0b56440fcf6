"""The Prometheus metrics every service exports on `/metrics`.

Every metric carries a `service` label (the service that counts it), so that one dashboard
variable and one alert expression select a service across all of them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_IN = Counter("intake_messages_in_total", "Messages received", ["service", "channel"])
MESSAGES_OUT = Counter("intake_messages_out_total", "Messages published or persisted",
                       ["service", "channel"])
ERRORS = Counter("intake_errors_total", "Failures by reason", ["service", "reason"])
IGNORED = Counter("intake_ignored_total", "Events dropped on purpose",
                  ["service", "channel", "reason"])
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
# From the message's `received_at` (the edge's clock) to its commit in the ticket core: the
# figure the latency alert and the dashboard's p50/p99 read (deploy/prometheus/alerts.yaml).
END_TO_END_SECONDS = Histogram(
    "intake_end_to_end_seconds", "From received at the edge to persisted by the ticket core",
    ["service", "channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
# SLA targets missed: the ticket core's scheduler counts an `sla_breach` timer that fires with
# its target not met, by the ticket's desk then; the SLA alert and panel read it.
SLA_BREACHES = Counter(
    "intake_sla_breaches_total",
    "SLA targets missed (an sla_breach timer fired), by the ticket's desk and the target",
    ["service", "desk", "target"],
)
