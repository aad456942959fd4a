"""Store a callback once: the dedup mark and the stream entry in one Lua call.

Under load many callbacks are waiting for Redis at the same moment. ``Store.once`` queues each
call and sends everything queued within one event-loop tick as a single pipeline
(``Script.run_batch``: no transaction, each script call stands alone and fails alone). One
callback still costs one round trip, but a burst of them shares it: in ``make bench`` the
batched store costs about a third of the CPU of one call per request.

With ``BUS_PARTITIONS`` the entry goes to its member's partition (``shared.bus.partitions``);
the dedup mark lives in the same partition, so the script stays in one slot. With
``BUS_MIN_REPLICAS`` the pipeline ends with ``WAIT``: a callback is acknowledged (200) only once
that many replicas hold it, else it fails (503) and WeCom retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

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

_Call = tuple[Sequence[str], Sequence[bytes | int | str]]


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
        self._calls: list[_Call] = []
        self._futures: list[asyncio.Future[bytes | None]] = []

    def once(
        self, app: str, key: str, data: bytes, member: str = ""
    ) -> asyncio.Future[bytes | None]:
        """Add ``data`` to ``member``'s events stream unless ``app`` stored ``key`` already.

        Resolves to the new entry id, or None for a duplicate. Raises what Redis raised
        (connection errors included) for this call alone.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes | None] = loop.create_future()
        if not self._calls:
            loop.call_soon(self._flush)
        part = partitions.prefix_for(self.prefix, self.partitions, app, member)
        events, okey = names.events(part), order_key(app, member)
        keys = (names.seen(part, app, key), events, names.order_seq(events, okey))
        self._calls.append((keys, (self.dedup_ttl, self.maxlen, data, okey)))
        self._futures.append(future)
        return future

    def _flush(self) -> None:
        calls, futures = self._calls, self._futures
        self._calls, self._futures = [], []
        task = asyncio.ensure_future(self._send(calls, futures))
        task.add_done_callback(_retrieve)

    async def _send(self, calls: list[_Call], futures: list[asyncio.Future[bytes | None]]) -> None:
        try:
            results: list[Any] = await STORE_ONCE.run_batch(self.redis, calls, wait=self.wait)
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise
        except Exception as exc:  # a dropped connection fails the whole batch
            results = [exc] * len(calls)
        for future, result in zip(futures, results, strict=True):
            if future.done():  # the request went away (client disconnected)
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # failures were handed to the callers' futures
