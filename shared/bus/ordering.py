"""Per-member order: a member's entries are handled in the order the member wrote them.

The ingress gives every event a sequence number per member and partition (fields ``okey`` =
``<app>/<member>`` and ``oseq``, counted in the store script); a consumer's commit gives its
outputs the next numbers of the same member on the output stream, so the outbox carries the
order on. A group keeps, per member, the highest number it committed (``names.order_done``,
moved in the commit script itself).

Before handling entry n of a member, a consumer waits until its group committed n-1 (polling,
from 10 ms up to 200 ms apart). It waits at most ``order_wait`` seconds counted from the
moment the entry was added (its id's time), then goes ahead: a predecessor that failed, was
dead-lettered, deferred or trimmed never blocks a member for longer than that. Entry 1 and
entries without an order key never wait.

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

from shared.bus import names

__all__ = ["order_key", "order_of", "wait_turn"]


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
