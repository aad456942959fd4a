"""One consumer group over every partition of a stream (``BUS_PARTITIONS``).

A ``PartitionedConsumer`` runs one :class:`~shared.bus.worker.Consumer` per partition in the
same process and event loop, under the same consumer name: each reads, claims, leases,
retries and dead-letters within its own partition (its scripts stay in that partition's slot).
Concurrency is shared by splitting it: ``BUS_CONCURRENCY``-style ``concurrency`` c over N
partitions gives each ``ceil(c / N)`` deliveries at once (at least 1), so a process runs at most
about c deliveries, and a busy partition cannot starve the others.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Sequence

import msgspec
from redis.asyncio import Redis

from shared.bus.delivery import Handler
from shared.bus.options import ConsumerOptions
from shared.bus.worker import Consumer

__all__ = ["PartitionedConsumer", "share"]


def share(options: ConsumerOptions, partitions: int) -> ConsumerOptions:
    """``options`` with concurrency and batch split over ``partitions`` consumers."""
    each = max(1, math.ceil(options.concurrency / partitions))
    return msgspec.structs.replace(options, concurrency=each, batch=min(options.batch, each * 2))


class PartitionedConsumer:
    """The ``Consumer`` interface (run, run_burst, stop, healthy, stats) over several streams."""

    def __init__(
        self,
        redis: Redis,
        *,
        streams: Sequence[str],
        group: str,
        handler: Handler,
        options: ConsumerOptions | None = None,
    ) -> None:
        opts = share(options if options is not None else ConsumerOptions(), len(streams))
        first = Consumer(redis, stream=streams[0], group=group, handler=handler, options=opts)
        opts = msgspec.structs.replace(opts, name=first.name)  # one name for the replica
        self.consumers = [first] + [
            Consumer(redis, stream=s, group=group, handler=handler, options=opts)
            for s in streams[1:]
        ]
        self.name, self.group = first.name, group

    @property
    def healthy(self) -> bool:
        return all(c.healthy for c in self.consumers)

    @property
    def stats(self) -> dict[str, int]:
        total: collections.Counter[str] = collections.Counter()
        for consumer in self.consumers:
            total.update(consumer.stats)
        return dict(total)

    def stop(self) -> None:
        for consumer in self.consumers:
            consumer.stop()

    async def run(self) -> None:
        await self._all(burst=False)

    async def run_burst(self) -> dict[str, int]:
        await self._all(burst=True)
        return self.stats

    async def _all(self, *, burst: bool) -> None:
        runs = [asyncio.create_task(c.run_burst() if burst else c.run()) for c in self.consumers]
        try:
            await asyncio.gather(*runs)
        finally:
            for task in runs:
                task.cancel()
            await asyncio.gather(*runs, return_exceptions=True)
