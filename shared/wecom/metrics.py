"""Every Prometheus metric of the WeCom client (token cache, rate governor), in one place.

They count per app (the ``app`` label) in the process that holds the client: the sender.
docs/metrics.md lists every metric the services export, and a test keeps it exact.
"""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["GETTOKEN_CALLS", "GOVERNOR_DELAYS", "TOKEN_REFRESHES"]

GETTOKEN_CALLS = Counter(
    "wecom_gettoken_calls", "gettoken calls made, by outcome", ["app", "outcome"]
)
TOKEN_REFRESHES = Counter(
    "wecom_token_refreshes", "access tokens obtained from gettoken, by why", ["app", "reason"]
)
GOVERNOR_DELAYS = Counter(
    "wecom_sender_governor_delays",
    "Send requests the governor held back because a member or the app had no room",
    ["app"],
)
