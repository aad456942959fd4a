"""Rolling per-minute counters, so the operator console can chart traffic without Prometheus.

A service counts in memory (one dict update per callback or send: no Redis command on the hot
path) and a background task adds the counts to Redis every few seconds, as one pipeline: an
``HINCRBY`` per (minute, field) that changed and an ``EXPIRE`` per minute key. However busy a
process is, it writes a handful of commands per interval. A process killed with SIGKILL loses
its last interval's counts (a dashboard, not an audit); a failed flush keeps them for the next.

Keys are ``names.stats(prefix, kind, minute)`` hashes (``minute`` = unix seconds // 60), field
``<app>|<name>`` → count, kept :data:`TTL` seconds. The kinds and names written today:

- ``callbacks`` (ingress): ``stored``, ``duplicate``, ``ack_us`` (sum of the ack times in
  microseconds), ``ack_n`` (how many), ``ack_le_<ms>`` (a histogram, one bucket per
  observation, bounds :data:`ACK_BUCKETS_MS`; ``ack_le_inf`` beyond).
- ``sends`` (sender): WeCom's errcode of each ``message/send`` (``0`` accepted), or
  ``unavailable`` when WeCom could not be reached.

:func:`read` returns the last minutes as dicts, for the console.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.bus import names

__all__ = ["ACK_BUCKETS_MS", "TTL", "Tally", "read"]

TTL = 2 * 3600  # the console shows the last hour; a key lives long enough never to leave a gap
ACK_BUCKETS_MS = (1, 2, 5, 10, 25, 100, 1000)
_BOUNDS_US = tuple(ms * 1000 for ms in ACK_BUCKETS_MS)
# ack latency per (minute, app): [sum µs, count, one count per bucket (the last: beyond)]
_ACK_FIELDS = ("ack_us", "ack_n", *(f"ack_le_{ms}" for ms in ACK_BUCKETS_MS), "ack_le_inf")


class Tally:
    """In-memory counts of one ``kind``, flushed to Redis by :meth:`run` (or :meth:`flush`)."""

    def __init__(self, kind: str, *, clock: Callable[[], float] = time.time) -> None:
        self.kind = kind
        self.clock = clock
        self._counts: dict[tuple[int, str, str], int] = {}
        self._acks: dict[tuple[int, str], list[int]] = {}

    def __repr__(self) -> str:
        return f"Tally({self.kind!r}, {len(self)} unflushed)"

    def __len__(self) -> int:
        """How many fields the next flush writes."""
        return len(self._fields())

    def add(self, app: str, name: str, n: int = 1) -> None:
        key = (int(self.clock()) // 60, app, name)
        self._counts[key] = self._counts.get(key, 0) + n

    def ack(self, app: str, outcome: str, seconds: float) -> None:
        """One acknowledged callback: its outcome and how long the ack took (hot path: a few
        dict and list updates)."""
        minute = int(self.clock()) // 60
        key = (minute, app, outcome)
        self._counts[key] = self._counts.get(key, 0) + 1
        row = self._acks.get((minute, app))
        if row is None:
            row = self._acks[(minute, app)] = [0] * len(_ACK_FIELDS)
        micros = int(seconds * 1_000_000)
        row[0] += micros
        row[1] += 1
        row[2 + bisect.bisect_left(_BOUNDS_US, micros)] += 1

    def _fields(self) -> dict[tuple[int, str], int]:
        """(minute, "<app>|<name>") → count, for everything not flushed yet."""
        fields = {(m, f"{app}|{name}"): n for (m, app, name), n in self._counts.items()}
        for (minute, app), row in self._acks.items():
            for name, n in zip(_ACK_FIELDS, row, strict=True):
                if n:
                    fields[(minute, f"{app}|{name}")] = n
        return fields

    async def flush(self, redis: Redis, prefix: str) -> int:
        """Add the counts so far to Redis; returns how many fields were written. On a Redis
        error the counts are kept for the next flush and the error is raised."""
        counts = self._fields()
        self._counts, self._acks = {}, {}
        if not counts:
            return 0
        pipe = redis.pipeline(transaction=False)
        for (minute, field), n in counts.items():
            pipe.hincrby(names.stats(prefix, self.kind, minute), field, n)
        for minute in {minute for minute, _ in counts}:
            pipe.expire(names.stats(prefix, self.kind, minute), TTL)
        try:
            await pipe.execute()
        except BaseException:
            for (minute, field), n in counts.items():  # counted meanwhile: add, not replace
                app, _, name = field.partition("|")
                key = (minute, app, name)
                self._counts[key] = self._counts.get(key, 0) + n
            raise
        return len(counts)

    async def run(
        self, redis: Redis, prefix: str, stop: asyncio.Event, interval: float = 5.0
    ) -> None:
        """Flush every ``interval`` seconds until ``stop`` is set, then once more. While Redis
        is unreachable the counts wait in memory (a few fields per app and minute)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            with contextlib.suppress(RedisError, OSError):
                await self.flush(redis, prefix)
        with contextlib.suppress(RedisError, OSError):  # what was counted while stopping
            await self.flush(redis, prefix)


async def read(
    redis: Redis, prefix: str, kind: str, minutes: int = 60, *, now: float | None = None
) -> list[tuple[int, dict[str, int]]]:
    """The last ``minutes`` minutes of ``kind``, oldest first: (minute, {"<app>|<name>": n})."""
    last = int(time.time() if now is None else now) // 60
    span = range(last - minutes + 1, last + 1)
    pipe = redis.pipeline(transaction=False)
    for minute in span:
        pipe.hgetall(names.stats(prefix, kind, minute))
    found = await pipe.execute()
    return [
        (minute, {_text(k): int(v) for k, v in raw.items()})
        for minute, raw in zip(span, found, strict=True)
    ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
