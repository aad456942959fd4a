"""Claiming: taking over entries of the group that nobody is working on.

Two kinds: deferred entries whose ``Retry`` is due (their ids wait in ``<stream>:retry:<group>``;
ZRANGE+ZREM in one script, so one replica wins each; then XCLAIM), and entries idle for
``claim_idle`` (XAUTOCLAIM), whose consumer died or failed. A running handler's entry is never
idle that long: its lease is extended (``shared.bus.leasing``).

XAUTOCLAIM knows nothing of the retry set, so an entry deferred for longer than ``claim_idle``
is claimed early: the claimer then restores its delivery counter and leaves it alone until due.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Collection

from redis.asyncio import Redis

from shared.bus import metrics, names, streams
from shared.bus.streams import Entry

__all__ = ["Claimer", "now_ms"]

log = logging.getLogger("wecom_bus.bus")


def now_ms() -> int:
    return int(time.time() * 1000)


class Claimer:
    """One consumer's claiming of ``group`` on ``stream`` (it keeps the XAUTOCLAIM cursor)."""

    def __init__(
        self, redis: Redis, *, stream: str, group: str, consumer: str, claim_idle_ms: int
    ) -> None:
        self.redis, self.stream, self.group, self.consumer = redis, stream, group, consumer
        self.claim_idle_ms = claim_idle_ms
        self.retry_key = names.retry(stream, group)
        self.cursor = "0-0"
        self.poll = max(min(claim_idle_ms / 4000, 1.0), 0.01)
        self._dues: list[int] = []  # heap of due times (unix ms) of retries scheduled here

    def due_at(self, due_ms: int) -> None:
        """A retry scheduled here: wake for it rather than waiting for the next poll."""
        heapq.heappush(self._dues, due_ms)

    def pause(self) -> float:
        """Until the next claim round: the poll interval, or sooner when a retry is due."""
        now = now_ms()
        while self._dues and self._dues[0] <= now:
            heapq.heappop(self._dues)
        return min(self.poll, (self._dues[0] - now) / 1000 if self._dues else math.inf)

    async def claim(self, limit: int, running: Collection[str]) -> list[tuple[Entry, int]]:
        """Up to ``limit`` entries to start, with their delivery counts: due retries first."""
        due = await streams.take_due(self.redis, self.retry_key, now_ms(), limit)
        # XCLAIM with min-idle 0: a due entry may have been idle for less than claim_idle.
        entries = await streams.claim(self.redis, self.stream, self.group, self.consumer, due)
        if len(entries) < limit:
            entries += await self._stale(limit - len(entries))
        entries = [e for e in entries if e.id not in running]
        ids = [e.id for e in entries]
        counts = await streams.delivery_counts(self.redis, self.stream, self.group, ids)
        # An entry missing from counts was acknowledged by someone meanwhile.
        return [(e, counts[e.id]) for e in entries if e.id in counts]

    async def _stale(self, limit: int) -> list[Entry]:
        claimed = await streams.claim_stale(
            self.redis,
            self.stream,
            self.group,
            self.consumer,
            min_idle_ms=self.claim_idle_ms,
            count=limit,
            cursor=self.cursor,
        )
        self.cursor = claimed.cursor
        if claimed.deleted:
            metrics.LOST.labels(self.stream, self.group).inc(len(claimed.deleted))
            log.warning(
                "pending entries were trimmed or deleted before being processed",
                extra={"stream": self.stream, "group": self.group, "ids": claimed.deleted},
            )
        return await self._not_deferred(claimed.entries)

    async def _not_deferred(self, entries: list[Entry]) -> list[Entry]:
        """Drop entries XAUTOCLAIM took before their Retry was due, undoing the count it added."""
        ids = [e.id for e in entries]
        now = now_ms()
        deferred = await streams.deferred_until(self.redis, self.retry_key, ids)
        early = {i for i, due in deferred.items() if due > now}
        if early:
            counts = await streams.delivery_counts(self.redis, self.stream, self.group, [*early])
            for entry_id, count in counts.items():
                await streams.set_delivery_count(
                    self.redis, self.stream, self.group, self.consumer, entry_id, max(count - 1, 0)
                )
        return [e for e in entries if e.id not in early]
