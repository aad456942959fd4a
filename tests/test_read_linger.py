"""ConsumerOptions.read_linger: entries trickling in are read together, and all handled."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.bus.delivery import Delivery, Output
from shared.bus.linger import Linger
from shared.bus.options import ConsumerOptions
from shared.bus.streams import Entry
from shared.bus.worker import Consumer
from tests.helpers import eventually

S, G = "t:events", "g"


async def reads(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_xreadgroup", {}).get("calls", 0))


async def trickle(redis: Redis, linger: float) -> tuple[list[bytes], int]:
    """Six entries 20 ms apart after a first one; what was handled, and the reads it took."""
    handled: list[bytes] = []

    async def handler(delivery: Delivery) -> Sequence[Output]:
        handled.append(delivery.fields[b"n"])
        return []

    options = ConsumerOptions(prefix="t", block_ms=2000, read_linger=linger, start="backlog")
    worker = Consumer(redis, stream=S, group=G, handler=handler, options=options)
    task = asyncio.create_task(worker.run())
    try:
        await redis.xadd(S, {"n": "0"})
        await eventually(lambda: bool(handled))
        before = await reads(redis)
        for n in range(1, 7):
            await redis.xadd(S, {"n": str(n)})
            await asyncio.sleep(0.02)
        await eventually(lambda: len(handled) == 7)
        return handled, await reads(redis) - before
    finally:
        worker.stop()
        await task


async def test_a_trickle_is_read_in_one_go_with_a_linger(redis: Redis) -> None:
    handled, used = await trickle(redis, linger=0.5)
    assert sorted(handled) == [str(n).encode() for n in range(7)]
    assert used <= 2  # the lingering read, and the blocking one after it


async def test_without_a_linger_each_arrival_is_its_own_read(redis: Redis) -> None:
    handled, used = await trickle(redis, linger=0.0)
    assert sorted(handled) == [str(n).encode() for n in range(7)]
    assert used >= 3


def test_a_linger_is_bounded() -> None:
    with pytest.raises(ValueError, match="read_linger"):
        ConsumerOptions(read_linger=-0.1)
    with pytest.raises(ValueError, match="read_linger"):
        ConsumerOptions(read_linger=5)


async def lingering_consumer(redis: Redis, linger: float) -> tuple[Consumer, list[bytes]]:
    """A consumer that answers each entry with one output on "t:out"."""
    handled: list[bytes] = []

    async def handler(delivery: Delivery) -> Sequence[Output]:
        handled.append(delivery.fields[b"n"])
        return [Output("t:out", {"n": delivery.fields[b"n"]})]

    options = ConsumerOptions(prefix="t", block_ms=2000, read_linger=linger, start="backlog")
    return Consumer(redis, stream=S, group=G, handler=handler, options=options), handled


async def pending(redis: Redis) -> int:
    return int((await redis.xpending(S, G))["pending"])


async def settled(redis: Redis, outputs: int) -> bool:
    """``outputs`` entries on "t:out" and nothing pending: the commits reached Redis."""
    return await redis.xlen("t:out") >= outputs and not await pending(redis)


async def test_commits_made_while_lingering_go_with_the_next_read(redis: Redis) -> None:
    worker, handled = await lingering_consumer(redis, linger=0.4)
    task = asyncio.create_task(worker.run())
    try:
        await redis.xadd(S, {"n": "0"})
        await eventually(lambda: bool(handled))
        await asyncio.sleep(0.1)
        # Handled, but its commit waits for the read that ends the linger.
        assert await pending(redis) == 1 and await redis.xlen("t:out") == 0
        await redis.xadd(S, {"n": "1"})
        await eventually(lambda: settled(redis, outputs=2))
    finally:
        worker.stop()
        await task
    assert handled == [b"0", b"1"]
    outputs: Any = await redis.xrange("t:out")
    assert [f[b"n"] for _, f in outputs] == [b"0", b"1"]


async def test_a_held_commit_survives_a_forgotten_script(redis: Redis) -> None:
    worker, handled = await lingering_consumer(redis, linger=0.3)
    task = asyncio.create_task(worker.run())
    try:
        await redis.xadd(S, {"n": "0"})
        await eventually(lambda: settled(redis, outputs=1))  # the script is loaded
        await redis.xadd(S, {"n": "1"})
        await eventually(lambda: len(handled) == 2)
        await redis.script_flush()  # while the commit of "1" is held: NOSCRIPT, then EVAL
        await eventually(lambda: settled(redis, outputs=2))
    finally:
        worker.stop()
        await task


async def test_stopping_while_lingering_sends_the_held_commits(redis: Redis) -> None:
    worker, handled = await lingering_consumer(redis, linger=1.0)
    task = asyncio.create_task(worker.run())
    await redis.xadd(S, {"n": "0"})
    await eventually(lambda: bool(handled))
    worker.stop()
    async with asyncio.timeout(5):
        await task
    assert await pending(redis) == 0 and await redis.xlen("t:out") == 1


def arrivals(first_ms: int, gap_ms: int, count: int) -> list[Entry]:
    return [Entry(id=f"{first_ms + i * gap_ms}-0", fields={}) for i in range(count)]


def test_the_linger_is_kept_while_entries_arrive_within_it() -> None:
    linger = Linger(0.003)
    assert linger.after(arrivals(1000, 1, 1), wanted=16) == 0.003
    for n in range(20):  # 1,000 a second: one read every 3 ms finds 3
        assert linger.after(arrivals(1001 + 3 * n, 1, 3), wanted=16) == 0.003


def test_no_linger_when_entries_arrive_further_apart_than_twice_it() -> None:
    linger = Linger(0.003)
    pauses = [linger.after(arrivals(1000 + 10 * n, 10, 1), wanted=16) for n in range(10)]
    assert pauses[0] == 0.003  # nothing known yet
    assert pauses[-3:] == [0.0, 0.0, 0.0]  # 100 a second
    for n in range(20):  # the rate rises again: the linger comes back
        pause = linger.after(arrivals(2000 + 2 * n, 2, 1), wanted=16)
    assert pause == 0.003


def test_no_linger_after_a_full_or_empty_read_or_when_off() -> None:
    assert Linger(0.003).after(arrivals(1000, 1, 16), wanted=16) == 0.0
    assert Linger(0.003).after([], wanted=16) == 0.0
    assert Linger(0.0).after(arrivals(1000, 1, 1), wanted=16) == 0.0


async def redis_reads(redis: Redis) -> int:
    """Socket reads Redis served so far: about one per write a client made."""
    return int((await redis.info("stats"))["total_reads_processed"])


async def test_without_a_linger_a_commit_goes_with_the_next_read_and_is_answered_at_once(
    redis: Redis,
) -> None:
    """Entries arriving one at a time: each one's commit is written with the reader's next
    read, which then blocks, one write for both; the commit's caller has its answer at once,
    not when the read returns."""
    worker, handled = await lingering_consumer(redis, linger=0.0)  # block_ms=2000
    task = asyncio.create_task(worker.run())
    try:
        await redis.xadd(S, {"n": "0"})
        await eventually(lambda: settled(redis, outputs=1))
        await asyncio.sleep(0.1)
        before = await redis_reads(redis)
        for n in range(1, 6):
            await redis.xadd(S, {"n": str(n)})  # one read of Redis's each
            await asyncio.sleep(0.1)  # handled and committed meanwhile, no polling
        used = await redis_reads(redis) - before - 5 - 1  # the five XADDs, this INFO
        assert worker.stats["ok"] == 6  # the read after the last one still blocks
        assert await redis.xlen("t:out") == 6 and await pending(redis) == 0
    finally:
        worker.stop()
        await task
    assert handled == [str(n).encode() for n in range(6)]
    assert used <= 6  # one write per entry: its commit and the next read (two before)
