"""Every Prometheus metric of the bus (consumers, groups, background tasks), in one place.

Gauges of shared Redis state (group lag, pending, trimmed-unread) are read from Redis by every
replica, so each replica exports the same value: aggregate them with ``max by (stream, group)``,
never ``sum``. docs/metrics.md lists every metric the services export; a test keeps it exact.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BACKGROUND_RESTARTS",
    "BACKGROUND_UP",
    "GROUP_LAG",
    "GROUP_PENDING",
    "GROUP_TRIMMED_UNREAD",
    "HANDLER_SECONDS",
    "LEASES_LOST",
    "LOST",
    "PROCESSED",
    "REPLIES_TO_SYS",
]

PROCESSED = Counter(
    "wecom_consumer_processed",
    "Deliveries by outcome: ok, retry, rejected, failed (left pending), deadlettered",
    ["stream", "group", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "wecom_consumer_handler_seconds",
    "Handler run time, whatever the outcome",
    ["stream", "group"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
LOST = Counter(
    "wecom_consumer_lost",
    "Pending entries trimmed or deleted from the stream before anyone processed them",
    ["stream", "group"],
)
LEASES_LOST = Counter(
    "wecom_consumer_leases_lost",
    "Running entries another consumer took over (this one could not extend their lease)",
    ["stream", "group"],
)
GROUP_LAG = Gauge(
    "wecom_stream_group_lag",
    "Entries not yet delivered to the group (shared state: max by (stream, group))",
    ["stream", "group"],
)
GROUP_PENDING = Gauge(
    "wecom_stream_group_pending",
    "Entries delivered but not acknowledged (shared state: max by (stream, group))",
    ["stream", "group"],
)
GROUP_TRIMMED_UNREAD = Gauge(
    "wecom_stream_group_trimmed_unread",
    "Entries MAXLEN trimming removed before the group read them, since the stream was created"
    " (shared state: max by (stream, group))",
    ["stream", "group"],
)
BACKGROUND_UP = Gauge(
    "wecom_background_task_up",
    "1 while a supervised background task runs, 0 while it waits to be restarted",
    ["task"],
)
BACKGROUND_RESTARTS = Counter(
    "wecom_background_task_restarts",
    "Restarts of a supervised background task after it failed or ended",
    ["task"],
)
REPLIES_TO_SYS = Counter(
    "wecom_router_replies_to_sys",
    "Requests a handler addressed to 'sys' in reply to a system event: not sent to 'sys'",
    ["handler"],
)
