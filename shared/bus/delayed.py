"""The delayed queue: send requests waiting for a retry or a rate-limit slot.

Two keys::

    <prefix>:delayed        zset    request id -> due unix time (seconds, float)
    <prefix>:delayed:data   hash    request id -> the entry's bytes

The id, not the data, is the zset member: scheduling the same request twice (a redelivered
outbox entry deferred again, perhaps with a changed attempt counter in its data) keeps one
entry, the last one written (its data and due time). An ``id + data`` member would keep two
whenever the bytes differ.

``move_due`` is one Lua script that copies due entries onto the target stream and removes them,
so two schedulers running at once move each entry exactly once. A request re-scheduled after
it was moved is moved again; the sender's ``sent:<id>`` mark keeps that from sending twice.

Redis Cluster: a script or MULTI may only touch keys of one slot, and here the zset, the hash
and the target stream (``<prefix>:outbox``) go together. ``prefix`` is a partition's prefix
(``names.partition``: one hash tag per partition, one delayed queue per partition moving into
that partition's outbox) or a ``BUS_PREFIX`` with a hash tag (``{wecom}``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.bus import names
from shared.bus.scripts import Script

__all__ = [
    "data_key",
    "earliest_due",
    "move_due",
    "run_scheduler",
    "schedule",
    "size",
]

log = logging.getLogger(__name__)

# Worth waiting out: the server is away, restarting, loading, or a replica after a failover.
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError)

# KEYS: zset, data hash, target stream.  ARGV: now, limit, maxlen ("" = no trimming).
# Per entry the XADD comes before the removal: a failing XADD aborts the script with the
# entry still queued (Redis does not roll back a script, so order is the guarantee).
_MOVE_DUE = Script("""
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local moved = 0
for _, id in ipairs(ids) do
  local data = redis.call('HGET', KEYS[2], id)
  if data then
    if ARGV[3] == '' then
      redis.call('XADD', KEYS[3], '*', 'data', data)
    else
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'data', data)
    end
    moved = moved + 1
  end
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {moved, first[2] or false}
""")


def data_key(prefix: str) -> str:
    return names.delayed_data(prefix)


async def schedule(redis: Redis, prefix: str, data: bytes, due: float, *, member_id: str) -> None:
    """Queue ``data`` to be moved to a stream at unix time ``due``; one entry per ``member_id``."""
    async with redis.pipeline(transaction=True) as pipe:  # both keys in one slot
        pipe.hset(data_key(prefix), member_id, data)
        pipe.zadd(names.delayed(prefix), {member_id: due})
        await pipe.execute()
    for sleeper in _sleepers.get(prefix, ()):  # this process's scheduler: look again now
        _wake(sleeper)


async def move_due(
    redis: Redis,
    prefix: str,
    *,
    target_stream: str,
    now: float,
    limit: int = 100,
    maxlen: int | None = 100_000,
) -> int:
    """Move up to ``limit`` entries due by ``now`` (earliest first) to ``target_stream``.

    Each becomes an entry with the single field ``data``; ``maxlen`` trims approximately
    (``None``: never). Returns how many were moved.
    """
    moved, _ = await _move(redis, prefix, target_stream, now, limit, maxlen)
    return moved


async def _move(
    redis: Redis, prefix: str, target_stream: str, now: float, limit: int, maxlen: int | None
) -> tuple[int, float | None]:
    """``move_due``'s count, and when the first entry left is due (None: none is left)."""
    if limit <= 0:
        return 0, None
    keys = [names.delayed(prefix), data_key(prefix), target_stream]
    args = (repr(float(now)), limit, "" if maxlen is None else maxlen)
    moved, first = await _MOVE_DUE(redis, keys, args)
    return int(moved), None if first is None else float(first)


async def size(redis: Redis, prefix: str) -> int:
    """How many entries are waiting (for the delayed-queue gauge)."""
    return int(await redis.zcard(names.delayed(prefix)))


async def earliest_due(redis: Redis, prefix: str) -> float | None:
    """Due time of the next entry, or None when the queue is empty."""
    first = await redis.zrange(names.delayed(prefix), 0, 0, withscores=True)
    return float(first[0][1]) if first else None


async def run_scheduler(
    redis: Redis,
    prefix: str,
    target_stream: str,
    *,
    interval: float = 0.2,
    idle: float = 1.0,
    stop: asyncio.Event,
    clock: Callable[[], float] = time.time,
    limit: int = 100,
    maxlen: int | None = 100_000,
    max_backoff: float = 5.0,
) -> None:
    """Move due entries until ``stop`` is set: again when the next one is due, at most every
    ``interval`` and at least every ``idle`` seconds, and at once when this process schedules
    one (another replica's entry may wait up to ``idle`` past its due time).

    Every replica may run one; the script keeps them from doubling work. A full batch is
    followed at once by the next. While Redis is unreachable the loop backs off exponentially
    up to ``max_backoff`` and logs one warning per outage, and one line when it is back.
    """
    backoff = interval
    outage = False
    while not stop.is_set():
        try:
            now = clock()
            moved, first = await _move(redis, prefix, target_stream, now, limit, maxlen)
        except _TRANSIENT as exc:
            if not outage:
                outage = True
                log.warning(
                    "delayed queue: redis unavailable, backing off",
                    extra={"error": type(exc).__name__},
                )
            backoff = min(max(backoff * 2, interval, 0.05), max_backoff)
            await _wait(stop, backoff)
            continue
        if outage:
            outage = False
            log.info("delayed queue: redis reachable again")
        backoff = interval
        if moved < limit:
            due_in = idle if first is None else first - now
            await _wait(stop, min(max(due_in, interval), idle), prefix)


# The sleeping schedulers of this process, by prefix: schedule() wakes them.
_sleepers: dict[str, set[asyncio.Future[None]]] = {}


def _wake(sleeper: asyncio.Future[None]) -> None:
    if not sleeper.done():
        sleeper.set_result(None)


async def _wait(stop: asyncio.Event, seconds: float, prefix: str | None = None) -> None:
    """Sleep ``seconds``, until ``stop`` is set, or (with ``prefix``) until this process
    schedules an entry there, whichever comes first."""
    loop = asyncio.get_running_loop()
    sleeper: asyncio.Future[None] = loop.create_future()
    timer = loop.call_later(seconds, _wake, sleeper)
    stopped = asyncio.ensure_future(stop.wait())
    stopped.add_done_callback(lambda _: _wake(sleeper))
    if prefix is not None:
        _sleepers.setdefault(prefix, set()).add(sleeper)
    try:
        await sleeper
    finally:
        timer.cancel()
        stopped.cancel()
        if prefix is not None:
            _sleepers[prefix].discard(sleeper)
