"""Store a callback once: the dedup mark and the stream entry in one Lua call.

Under load many callbacks are waiting for Redis at the same moment. ``Store.once`` queues each
call and sends everything queued within one event-loop tick as a single pipeline
(``ScriptBatch``: no transaction, each script call stands alone and fails alone). One
callback still costs one round trip, but a burst of them shares it: in ``make bench`` the
batched store costs about a third of the CPU of one call per request.

With ``BUS_PARTITIONS`` the entry goes to its member's partition (``shared.bus.partitions``);
the dedup mark lives in the same partition, so the script stays in one slot. With
``BUS_MIN_REPLICAS`` the pipeline ends with ``WAIT``: a callback is acknowledged (200) only once
that many replicas hold it, else it fails (503) and WeCom retries.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from shared.bus import names, partitions
from shared.bus.ordering import order_key
from shared.bus.scripts import Script, Wait

__all__ = ["STORE_ONCE", "Store"]

# KEYS[1] dedup mark, KEYS[2] events stream, KEYS[3] the member's sequence counter;
# ARGV: mark TTL (s), MAXLEN, entry data, order key.
# The mark and the entry commit together: a crash cannot leave one without the other. The
# entry carries the member's next sequence number (shared.bus.ordering).
STORE_ONCE = Script("""
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  local seq = redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], 86400)
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'data', ARGV[3],
    'okey', ARGV[4], 'oseq', seq)
end
return false
""")


class Store:
    """Batches ``once()`` calls made in the same loop tick into one pipeline."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        maxlen: int,
        dedup_ttl: int,
        partitions: int = 1,
        wait: Wait | None = None,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.partitions = partitions
        self.wait = wait
        self.maxlen = maxlen
        self.dedup_ttl = dedup_ttl
        self._batch = STORE_ONCE.batch(redis, wait=wait)

    def once(
        self, app: str, key: str, data: bytes, member: str = ""
    ) -> asyncio.Future[bytes | None]:
        """Add ``data`` to ``member``'s events stream unless ``app`` stored ``key`` already.

        Resolves to the new entry id, or None for a duplicate. Raises what Redis raised
        (connection errors included) for this call alone.
        """
        part = partitions.prefix_for(self.prefix, self.partitions, app, member)
        events, okey = names.events(part), order_key(app, member)
        keys = (names.seen(part, app, key), events, names.order_seq(events, okey))
        return self._batch.call(keys, (self.dedup_ttl, self.maxlen, data, okey))
