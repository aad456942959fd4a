"""Every Prometheus metric of the sender service, in one place.

The WeCom client's own metrics (gettoken, token refreshes, governor delays) are in
``shared/wecom/metrics.py``; docs/metrics.md lists every metric the services export, and a test
keeps it exact. ``DELAYED`` is read from Redis, so every replica exports the same value:
aggregate it with ``max``, never ``sum``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CIRCUIT",
    "DELAYED",
    "GATEWAY_CALLS",
    "GATEWAY_SECONDS",
    "PARTIAL",
    "SENDS",
    "SKIPPED",
]

SENDS = Counter(
    "wecom_sender_sends", "message/send outcomes by app and errcode", ["app", "errcode"]
)
PARTIAL = Counter(
    "wecom_sender_partial_recipients",
    "Recipients WeCom reported invalid or unlicensed in a successful send",
    ["app", "kind"],
)
SKIPPED = Counter(
    "wecom_sender_skipped", "Requests not sent again because sent:<id> exists", ["app"]
)
CIRCUIT = Gauge(
    "wecom_sender_circuit",
    "1 for the state each app's send circuit is in (closed, open, probing), else 0",
    ["app", "state"],
)
DELAYED = Gauge(
    "wecom_sender_delayed", "Send requests waiting in <prefix>:delayed for a rate-limit slot"
)
GATEWAY_CALLS = Counter(
    "wecom_gateway_calls",
    "Gateway calls by app, API path and outcome: WeCom's errcode, or refused, limited, unavailable",
    ["app", "api", "outcome"],
)
GATEWAY_SECONDS = Histogram(
    "wecom_gateway_seconds",
    "Time WeCom took to answer a gateway call",
    ["api"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
