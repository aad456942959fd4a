"""Telling a Redis outage from a bug: which errors mean "unreachable for now", and one log line
per outage rather than one per failed call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis import exceptions as rex

from shared.bus.delivery import describe

__all__ = ["OUTAGE", "RedisWatch"]

log = logging.getLogger("wecom_bus.bus")

# Errors that mean "Redis is unreachable for now" (ReadOnlyError: a failover in progress).
OUTAGE = (rex.ConnectionError, rex.TimeoutError, rex.ReadOnlyError, OSError)
_SETTLE_S = 1.0  # Redis must answer this long before an outage counts as over


class RedisWatch:
    """Whether Redis answers, as the calls of one consumer see it.

    ``ok()`` after every successful round trip, ``outage(exc)`` after an OUTAGE error. Right
    after a restart the pool still holds dead connections whose first use fails; waiting for
    calm keeps that from being logged as a second outage.
    """

    def __init__(self, where: Callable[[], dict[str, object]]) -> None:
        self._where = where
        self.last_ok = 0.0  # unix time of the last successful Redis round trip
        self.since: float | None = None  # monotonic start of the current outage
        self._calm_since: float | None = None

    def ok(self) -> None:
        self.last_ok = time.time()
        if self.since is None:
            return
        now = time.monotonic()
        if self._calm_since is None:
            self._calm_since = now
        elif now - self._calm_since >= _SETTLE_S:
            took = round(now - self.since, 1)
            log.warning("redis reachable again", extra={"outage_s": took, **self._where()})
            self.since = self._calm_since = None

    def outage(self, exc: BaseException) -> None:
        self._calm_since = None
        if self.since is None:
            self.since = time.monotonic()
            extra = {"error": describe(exc), **self._where()}
            log.warning("redis unreachable; retrying with backoff", extra=extra)
