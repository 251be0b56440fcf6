"""The router's own metrics (issue 16), beside the kernel's; each carries `service` as every
metric of the gateway does."""

from __future__ import annotations

from prometheus_client import Counter

SERVICE = "router"

DECISIONS = Counter("intake_router_decisions_total", "Messages routed, by the route that won",
                    ["service", "route"])
RULES_RELOAD = Counter("intake_router_rules_reload_total",
                       "Rules files taken (ok) or refused on reload", ["service", "result"])
CUSTOMER_LOOKUP = Counter("intake_router_customer_lookup_total",
                          "Customer lookups for rules reading customer.*, by result (skipped: the "
                          "decision read no customer key)",
                          ["service", "result"])

_by_route: dict[str, Counter] = {}


def count_decision(route: str) -> None:
    """One decision more for `route` (label children cached: this runs per message)."""
    child = _by_route.get(route)
    if child is None:
        child = _by_route[route] = DECISIONS.labels(service=SERVICE, route=route)
    child.inc()


_by_result: dict[str, Counter] = {}


def count_lookup(result: str) -> None:
    """One customer lookup more that ended in `result` (hit, miss, timeout, error, backoff,
    skipped)."""
    child = _by_result.get(result)
    if child is None:
        child = _by_result[result] = CUSTOMER_LOOKUP.labels(service=SERVICE, result=result)
    child.inc()
