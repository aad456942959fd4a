"""Per-member order: a member's entries are handled in the order the member wrote them.

The ingress gives every event a sequence number per member and partition (fields ``okey`` =
``<app>/<member>`` and ``oseq``, counted in the store script); a consumer's commit gives its
outputs the next numbers of the same member on the output stream, so the outbox carries the
order on. A group keeps, per member, the highest number it committed (``names.order_done``,
moved in the commit script itself).

Before handling entry n of a member, a consumer waits until its group committed n-1 (polling,
from 10 ms up to 200 ms apart). A consumer remembers the numbers it committed itself
(``Turns``): entry n waits for no read when this consumer committed n-1, and wakes as soon as
it does; the reads of one loop tick share a round trip. It waits at most ``order_wait``
seconds counted from the moment the entry was added (its id's time), then goes ahead: a
predecessor that failed, was dead-lettered, deferred or trimmed never blocks a member for
longer than that. Entry 1 and entries without an order key never wait.

The guarantee: without faults (no handler failure, retry, dead letter, delayed send, crash or
takeover, and each handler finishing within ``order_wait`` of its entry's arrival), a member's
entries of one app are committed by each group in the order they were written, with any number
of replicas; so the sender sends a member's replies in the order the member wrote.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from shared.bus import names
from shared.bus.scripts import settle_later
from shared.bus.wire import send_batch

__all__ = ["Turns", "order_key", "order_of", "wait_turn"]

_REMEMBERED = 100_000  # members whose done mark a consumer keeps in memory (then it forgets)


def order_key(app: str, member: str) -> str:
    """The order key of one member of one app (the field ``okey``)."""
    return f"{app}/{member}"


def order_of(fields: Mapping[bytes, bytes]) -> tuple[str, int] | None:
    """(order key, sequence number) of an entry, or None when it carries none."""
    key, seq = fields.get(b"okey"), fields.get(b"oseq")
    if not key or not seq or not seq.isdigit():
        return None
    return key.decode(errors="replace"), int(seq)


async def wait_turn(
    redis: Redis, stream: str, group: str, entry_id: str, order: tuple[str, int], bound: float
) -> bool:
    """Wait until ``group`` committed the member's previous entry; False: gave up (bound)."""
    key, seq = order
    if seq <= 1 or bound <= 0:
        return True
    deadline = int(entry_id.split("-")[0]) / 1000 + bound
    done_key, pause = names.order_done(stream, group, key), 0.01
    while True:
        done = await redis.get(done_key)
        if done is not None and int(done) >= seq - 1:
            return True
        left = deadline - time.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, 0.2)


class Turns:
    """One consumer's view of its group's done marks: the numbers it committed itself, and
    what it read from Redis (the marks only ever grow, so what it knows stays true)."""

    def __init__(self, redis: Redis, stream: str, group: str) -> None:
        self.redis, self.stream, self.group = redis, stream, group
        self._done: dict[str, int] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._reads: list[tuple[str, asyncio.Future[bytes | None]]] = []

    def committed(self, order: tuple[str, int]) -> None:
        """This consumer's commit moved the member's mark to ``order``'s number."""
        key, seq = order
        self._learn(key, seq)
        for waiter in self._waiters.pop(key, ()):
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, entry_id: str, order: tuple[str, int], bound: float) -> bool:
        """``wait_turn``, reading Redis only when this consumer does not know the answer."""
        key, seq = order
        if seq <= 1 or bound <= 0 or self._done.get(key, 0) >= seq - 1:
            return True
        deadline = int(entry_id.split("-")[0]) / 1000 + bound
        pause = 0.01
        while True:
            raw = await self._read(names.order_done(self.stream, self.group, key))
            if raw is not None:
                self._learn(key, int(raw))
            if self._done.get(key, 0) >= seq - 1:
                return True
            left = deadline - time.time()
            if left <= 0:
                return False
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(key, []).append(waiter)
            try:
                await asyncio.wait([waiter], timeout=min(pause, left))
            finally:
                waiting = self._waiters.get(key)
                if waiting is not None and waiter in waiting:
                    waiting.remove(waiter)
                    if not waiting:
                        del self._waiters[key]
            if self._done.get(key, 0) >= seq - 1:
                return True
            pause = min(pause * 2, 0.2)

    def _learn(self, key: str, seq: int) -> None:
        if seq > self._done.get(key, 0):
            if len(self._done) >= _REMEMBERED:
                self._done.clear()
            self._done[key] = seq

    def _read(self, done_key: str) -> asyncio.Future[bytes | None]:
        """GET ``done_key``; the reads of one loop tick go out together."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes | None] = loop.create_future()
        if isinstance(self.redis, RedisCluster):  # keys in many slots: one call each
            future = asyncio.ensure_future(self.redis.get(done_key))
            return future
        if not self._reads:
            loop.call_soon(self._flush)
        self._reads.append((done_key, future))
        return future

    def _flush(self) -> None:
        reads, self._reads = self._reads, []
        commands = [("GET", key) for key, _ in reads]
        settle_later([future for _, future in reads], send_batch(self.redis, commands))
