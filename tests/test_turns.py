"""shared.bus.ordering.Turns: a consumer's own knowledge of its group's done marks, on a real
Redis (the order guarantee end to end is tests/test_partitions.py's and the chaos test's)."""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis

from shared.bus import names
from shared.bus.ordering import Turns

STREAM, GROUP, MEMBER = "wecom:events", "g", "default/alice"


def entry_id(seconds_ago: float = 0.0) -> str:
    return f"{int((time.time() - seconds_ago) * 1000)}-0"


async def gets(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


async def test_what_this_consumer_committed_needs_no_read(redis: Redis) -> None:
    turns = Turns(redis, STREAM, GROUP)
    turns.committed((MEMBER, 4))
    before = await gets(redis)
    assert await turns.wait(entry_id(), (MEMBER, 5), bound=30) is True
    assert await turns.wait(entry_id(), (MEMBER, 3), bound=30) is True
    assert await gets(redis) == before


async def test_a_mark_another_replica_moved_is_read_from_redis(redis: Redis) -> None:
    await redis.set(names.order_done(STREAM, GROUP, MEMBER), 7)
    turns = Turns(redis, STREAM, GROUP)
    before = await gets(redis)
    assert await turns.wait(entry_id(), (MEMBER, 8), bound=30) is True
    assert await gets(redis) == before + 1
    assert await turns.wait(entry_id(), (MEMBER, 8), bound=30) is True  # remembered
    assert await gets(redis) == before + 1


async def test_a_waiting_entry_goes_as_soon_as_this_consumer_commits(redis: Redis) -> None:
    turns = Turns(redis, STREAM, GROUP)
    waiting = asyncio.ensure_future(turns.wait(entry_id(), (MEMBER, 2), bound=3600))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    turns.committed((MEMBER, 1))
    assert await asyncio.wait_for(waiting, 5) is True


async def test_the_reads_of_one_tick_are_answered_each(redis: Redis) -> None:
    for n, member in enumerate(["a/1", "a/2", "a/3"], start=1):
        await redis.set(names.order_done(STREAM, GROUP, member), n)
    turns = Turns(redis, STREAM, GROUP)
    answers = await asyncio.gather(
        turns.wait(entry_id(), ("a/1", 2), bound=30),
        turns.wait(entry_id(), ("a/2", 3), bound=30),
        turns.wait(entry_id(60), ("a/3", 9), bound=0.5),  # gave up: its bound passed
    )
    assert list(answers) == [True, True, False]
