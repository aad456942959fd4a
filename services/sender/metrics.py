"""The sender's metrics (listed in docs/metrics.md): the gateway's calls to WeCom."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["GATEWAY_CALLS", "GATEWAY_SECONDS"]

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
