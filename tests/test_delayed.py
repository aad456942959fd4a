"""The delayed queue against a real Redis."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from shared.bus import delayed, names

PREFIX = "wecom"
OUTBOX = "wecom:outbox"


async def stream_data(redis: Redis, stream: str = OUTBOX) -> list[bytes | str]:
    entries = await redis.xrange(stream) or []
    return [fields[b"data"] for _, fields in entries if fields is not None]


async def test_moves_due_entries_in_due_order_and_leaves_the_rest(redis: Redis) -> None:
    await delayed.schedule(redis, PREFIX, b"third", 130.0, member_id="c")
    await delayed.schedule(redis, PREFIX, b"first", 110.0, member_id="a")
    await delayed.schedule(redis, PREFIX, b"later", 200.0, member_id="d")
    await delayed.schedule(redis, PREFIX, b"second", 120.5, member_id="b")
    assert await delayed.size(redis, PREFIX) == 4
    assert await delayed.earliest_due(redis, PREFIX) == 110.0

    assert await delayed.move_due(redis, PREFIX, target_stream=OUTBOX, now=100.0) == 0
    assert await delayed.move_due(redis, PREFIX, target_stream=OUTBOX, now=130.0) == 3
    assert await stream_data(redis) == [b"first", b"second", b"third"]
    assert await delayed.size(redis, PREFIX) == 1
    assert await delayed.earliest_due(redis, PREFIX) == 200.0
    assert await redis.hkeys(delayed.data_key(PREFIX)) == [b"d"]  # moved data is gone too

    assert await delayed.move_due(redis, PREFIX, target_stream=OUTBOX, now=1e9) == 1
    assert await delayed.size(redis, PREFIX) == 0
    assert await delayed.earliest_due(redis, PREFIX) is None
    assert await redis.exists(delayed.data_key(PREFIX)) == 0


async def test_limit_caps_one_batch(redis: Redis) -> None:
    for i in range(5):
        await delayed.schedule(redis, PREFIX, b"%d" % i, float(i), member_id=str(i))
    assert await delayed.move_due(redis, PREFIX, target_stream=OUTBOX, now=10, limit=2) == 2
    assert await stream_data(redis) == [b"0", b"1"]
    assert await delayed.move_due(redis, PREFIX, target_stream=OUTBOX, now=10, limit=0) == 0
    assert await delayed.move_due(redis, PREFIX, target_stream=OUTBOX, now=10) == 3


async def test_scheduling_the_same_id_twice_keeps_one_the_last(redis: Redis) -> None:
    await delayed.schedule(redis, PREFIX, b"attempt 1", 50.0, member_id="req-1")
    await delayed.schedule(redis, PREFIX, b"attempt 2", 60.0, member_id="req-1")
    assert await delayed.size(redis, PREFIX) == 1
    assert await delayed.earliest_due(redis, PREFIX) == 60.0
    assert await delayed.move_due(redis, PREFIX, target_stream=OUTBOX, now=100) == 1
    assert await stream_data(redis) == [b"attempt 2"]


async def test_concurrent_movers_move_each_entry_exactly_once(redis_url: str) -> None:
    clients = [Redis.from_url(redis_url) for _ in range(2)]
    try:
        await clients[0].flushdb()
        for i in range(300):
            await delayed.schedule(clients[0], PREFIX, b"e%03d" % i, float(i), member_id=str(i))
        totals = await asyncio.gather(
            *(
                delayed.move_due(c, PREFIX, target_stream=OUTBOX, now=1000, limit=7)
                for _ in range(30)
                for c in clients
            )
        )
        moved = await stream_data(clients[0])
    finally:
        for c in clients:
            await c.aclose()
    assert sum(totals) == 300
    assert sorted(moved) == [b"e%03d" % i for i in range(300)]


async def test_maxlen_trims_the_target_stream(redis: Redis) -> None:
    for i in range(500):
        await delayed.schedule(redis, PREFIX, b"x", float(i), member_id=str(i))
    await delayed.move_due(redis, PREFIX, target_stream=OUTBOX, now=1000, limit=500, maxlen=10)
    assert await redis.xlen(OUTBOX) < 500


async def test_a_failing_xadd_loses_nothing(redis: Redis) -> None:
    await redis.set("not-a-stream", "x")
    await delayed.schedule(redis, PREFIX, b"keep me", 1.0, member_id="k")
    with pytest.raises(Exception, match="WRONGTYPE"):
        await delayed.move_due(redis, PREFIX, target_stream="not-a-stream", now=10)
    assert await delayed.size(redis, PREFIX) == 1
    assert await delayed.move_due(redis, PREFIX, target_stream=OUTBOX, now=10) == 1
    assert await stream_data(redis) == [b"keep me"]


async def test_scheduler_moves_entries_and_stops_on_the_event(redis: Redis) -> None:
    stop = asyncio.Event()
    await delayed.schedule(redis, PREFIX, b"due", 10.0, member_id="due")
    await delayed.schedule(redis, PREFIX, b"future", 10_000.0, member_id="future")
    task = asyncio.create_task(
        delayed.run_scheduler(redis, PREFIX, OUTBOX, interval=0.01, stop=stop, clock=lambda: 20.0)
    )
    async with asyncio.timeout(5):
        while await redis.xlen(OUTBOX) == 0:
            await asyncio.sleep(0.005)
        stop.set()
        await task
    assert await stream_data(redis) == [b"due"]
    assert await delayed.size(redis, PREFIX) == 1


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_scheduler_survives_an_outage_and_logs_it_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    attempts = 0

    def clock() -> float:  # called once per attempt; stops the loop after five
        nonlocal attempts
        attempts += 1
        if attempts == 5:
            stop.set()
        return 0.0

    # no client-side retries: each attempt of the loop then fails at once
    unreachable = Redis(
        host="127.0.0.1", port=closed_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )
    caplog.set_level(logging.INFO, logger="shared.bus.delayed")
    try:
        async with asyncio.timeout(10):
            await delayed.run_scheduler(
                unreachable,
                PREFIX,
                OUTBOX,
                interval=0.001,
                max_backoff=0.01,
                stop=stop,
                clock=clock,
            )
    finally:
        await unreachable.aclose()
    assert attempts == 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "unavailable" in warnings[0].getMessage()


async def test_scheduler_sleeps_until_the_next_entry_is_due_and_wakes_when_one_is_added(
    redis: Redis,
) -> None:
    """Idle, it looks at most every ``idle`` seconds, not every ``interval``; an entry due
    soon is moved when due, and one this process schedules is looked at at once."""
    stop = asyncio.Event()
    looks: list[float] = []

    def clock() -> float:  # called once per look
        looks.append(time.monotonic())
        return time.time()

    scheduler = asyncio.create_task(
        delayed.run_scheduler(
            redis, PREFIX, OUTBOX, interval=0.01, idle=0.4, stop=stop, clock=clock
        )
    )
    try:
        await asyncio.sleep(1.0)
        assert 2 <= len(looks) <= 5  # every 0.4 s while empty (every 0.01 s would be ~100)

        due = time.time() + 0.3
        await redis.zadd(names.delayed(PREFIX), {"soon": due})  # as another replica
        await redis.hset(delayed.data_key(PREFIX), "soon", b"soon")
        async with asyncio.timeout(3):
            while await redis.xlen(OUTBOX) == 0:
                await asyncio.sleep(0.01)
        assert time.time() >= due  # not before it was due, and within the idle period after

        started = time.monotonic()
        seen = len(looks)
        await delayed.schedule(redis, PREFIX, b"now", time.time(), member_id="now")
        async with asyncio.timeout(3):
            while await redis.xlen(OUTBOX) < 2:
                await asyncio.sleep(0.005)
        assert time.monotonic() - started < 0.2 and len(looks) > seen  # woken, not at 0.4 s
    finally:
        stop.set()
        await scheduler
    assert await stream_data(redis) == [b"soon", b"now"]
