"""Every Lua script of the bus runs through ``shared.bus.scripts.Script`` (EVALSHA, NOSCRIPT
fallback, keys as KEYS), and Script itself survives a SCRIPT FLUSH."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from shared.bus.scripts import Script, TickPipeline, TickScripts

BUS = Path(__file__).parent.parent / "shared" / "bus"
# Other ways of running Lua: redis-py's register_script, EVAL/EVALSHA by hand, a home-made class.
OTHER_WAYS = re.compile(r"register_script\(|\.evalsha\(|\.eval\(|class _?Script\b")


def bus_modules() -> list[object]:
    params: list[object] = []
    for path in sorted(BUS.glob("*.py")):
        if path.name == "scripts.py":
            continue
        params.append(pytest.param(path, id=path.name))
    return params


@pytest.mark.parametrize("path", bus_modules())
def test_lua_runs_only_through_script(path: Path) -> None:
    hits = [
        line.strip() for line in path.read_text("utf-8").splitlines() if OTHER_WAYS.search(line)
    ]
    assert hits == []


async def test_script_reloads_itself_after_a_script_flush(redis: Redis) -> None:
    echo = Script("return {KEYS[1], ARGV[1]}")
    assert await echo(redis, ["k"], ["v"]) == [b"k", b"v"]
    await redis.script_flush()
    assert await echo(redis, ["k2"], [3]) == [b"k2", b"3"]


def connections(client: Redis) -> int:
    """Connections the client's pool opened so far (one per round trip in flight at once)."""
    pool = client.connection_pool
    return len(pool._available_connections) + len(pool._in_use_connections)


async def test_script_calls_of_one_tick_share_a_round_trip_and_fail_alone(redis_url: str) -> None:
    client: Redis = Redis.from_url(redis_url)
    try:
        await client.flushdb()
        await client.hset("not-a-string", "f", "v")
        incr = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        await client.script_flush()  # the batch loads it again (NOSCRIPT), still as one batch
        batch = incr.batch(client)
        keys = [f"n{i}" for i in range(20)] + ["not-a-string"]
        results = await asyncio.gather(
            *(batch.call([k], [i]) for i, k in enumerate(keys)), return_exceptions=True
        )
        assert results[:20] == list(range(20))
        assert isinstance(results[20], ResponseError)  # WRONGTYPE, for that call alone
        assert connections(client) == 1
    finally:
        await client.aclose()


async def test_tick_pipeline_hands_each_caller_its_results(redis_url: str) -> None:
    client: Redis = Redis.from_url(redis_url)
    try:
        await client.flushdb()
        ticks = TickPipeline(client, transaction=True)

        async def one(i: int) -> list[object]:
            def fill(pipe: Pipeline) -> None:
                pipe.set(f"k{i}", i)
                pipe.incrby(f"c{i}", i)

            return await ticks.run(fill)

        assert await asyncio.gather(*(one(i) for i in range(10))) == [[True, i] for i in range(10)]
        assert connections(client) == 1
        assert await client.get("k7") == b"7"
    finally:
        await client.aclose()


async def test_a_lost_connection_fails_every_caller_of_the_tick() -> None:
    client: Redis = Redis(port=1, socket_connect_timeout=0.5)  # nothing listens there
    ticks = TickPipeline(client)
    results = await asyncio.gather(
        *(ticks.run(lambda pipe: pipe.get("k")) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RedisConnectionError) for r in results)
    await client.aclose()


async def test_calls_of_several_scripts_in_one_tick_share_a_round_trip(redis_url: str) -> None:
    client: Redis = Redis.from_url(redis_url)
    try:
        await client.flushdb()
        await client.hset("not-a-string", "f", "v")
        incr = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        echo = Script("return ARGV[1]")
        await echo(client, ["e"], ["loaded"])
        await client.script_flush()  # both load again (NOSCRIPT), still as one batch
        tick = TickScripts(client)
        results = await asyncio.gather(
            tick.call(incr, ["n"], [5]),
            tick.call(echo, ["e"], ["hi"]),
            tick.call(incr, ["not-a-string"], [1]),
            tick.call(echo, ["e"], [b"there"]),
            return_exceptions=True,
        )
        assert results[0] == 5 and results[1] == b"hi" and results[3] == b"there"
        assert isinstance(results[2], ResponseError)  # WRONGTYPE, for that call alone
        assert connections(client) == 1
    finally:
        await client.aclose()
