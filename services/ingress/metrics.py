"""Prometheus metrics of the ingress (served on GET /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CALLBACKS = Counter(
    "wecom_ingress_callbacks",
    "Callbacks by app and outcome (stored, duplicate, verified, or the refusal reason)",
    ["app", "outcome"],
)
ACK_SECONDS = Histogram(
    "wecom_ingress_ack_seconds",
    "Time from request start to the 200 for stored or duplicate callbacks",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SKEW = Histogram(
    "wecom_ingress_clock_skew_seconds",
    "Absolute difference between a callback's timestamp and our clock",
    buckets=(1, 5, 30, 60, 300, 900, 3600, 86400),
)

CounterChild = Counter  # what Counter.labels(...) returns
