"""Leases: a running handler keeps its entry, however long it runs.

An entry pending in a group is taken over by another replica (XAUTOCLAIM) once it has been idle
for ``claim_idle``. A consumer therefore extends the lease of every entry it is running, three
times per claim window, with ``XCLAIM <id> JUSTID`` to itself: that resets the entry's idle time
and, with JUSTID, does not count a delivery, so dead-letter counting stays right. A replica that
dies stops extending, and its entries are taken over within ``claim_idle`` of its death.

The script checks ownership first: an entry another consumer already holds (this one lost its
lease during a long outage) is never taken back, but reported so its local run can stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from redis.asyncio import Redis

from shared.bus import metrics
from shared.bus.scripts import Script

__all__ = ["extend_leases", "renew_leases"]

log = logging.getLogger("wecom_bus.bus")

# KEYS: stream.  ARGV: group, consumer, ids...  Returns the ids another consumer now holds.
_EXTEND = Script("""
local taken = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p > 0 then
    if p[1][2] == ARGV[2] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    else
      taken[#taken + 1] = ARGV[i]
    end
  end
end
return taken
""")


async def extend_leases(
    redis: Redis, stream: str, group: str, consumer: str, ids: Sequence[str]
) -> list[str]:
    """Reset the idle time of ``ids`` held by ``consumer``; returns those someone else holds.

    Ids no longer pending (acknowledged meanwhile) are skipped.
    """
    if not ids:
        return []
    taken = await _EXTEND(redis, [stream], [group, consumer, *ids])
    return [i.decode() if isinstance(i, bytes) else str(i) for i in taken]


async def renew_leases(
    redis: Redis, stream: str, group: str, consumer: str, running: Mapping[str, asyncio.Task[None]]
) -> None:
    """Extend the leases of ``running`` (entry id → its task); cancel the runs of entries
    another consumer took over meanwhile (only one of the two could commit anyway)."""
    taken = await extend_leases(redis, stream, group, consumer, list(running))
    for entry_id in taken:
        task = running.get(entry_id)
        if task is not None and not task.done():
            metrics.LEASES_LOST.labels(stream, group).inc()
            log.warning(
                "another consumer took over a running entry; stopping it here",
                extra={
                    "stream": stream,
                    "group": group,
                    "consumer": consumer,
                    "entry_id": entry_id,
                },
            )
            task.cancel()
