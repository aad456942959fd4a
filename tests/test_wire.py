"""shared.bus.wire: batches of commands sent without redis-py's pipeline, on a real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.bus.wire import pack, send_batch


def test_pack_matches_redis_py() -> None:
    conn = Connection()
    commands = [
        ("SET", "k", b"\x00\xffv", "EX", 10),
        ("EVALSHA", "abc", 2, "k1", b"k2", -3, 1.5, "好", b""),
        ("XADD", "s", "*", "data", b"x" * 1023, "more", "y" * 1024, "big", b"z" * 70_000),
    ]
    expected = b"".join(b"".join(conn.pack_command(*c)) for c in commands)
    assert pack(commands) == expected


def test_pack_refuses_what_redis_py_refuses() -> None:
    with pytest.raises(TypeError):
        pack([("SET", "k", True)])
    with pytest.raises(TypeError):
        pack([("SET", "k", None)])  # type: ignore[list-item]


async def test_replies_in_order_with_errors_in_place(redis: Redis) -> None:
    await redis.set("s", "1")
    replies = await send_batch(
        redis, [("INCR", "n"), ("LPUSH", "s", "x"), ("GET", "s"), ("INCRBY", "n", 4)]
    )
    assert replies[0] == 1
    assert isinstance(replies[1], ResponseError) and "WRONGTYPE" in str(replies[1])
    assert replies[2:] == [b"1", 5]
    assert await redis.get("n") == b"5"  # the connection went back to the pool in step
    assert await send_batch(redis, [("GET", "n")]) == [b"5"]


async def test_a_killed_pooled_connection_does_not_fail_the_next_batch(redis: Redis) -> None:
    assert await send_batch(redis, [("CLIENT", "SETNAME", "victim")]) == [b"OK"]
    await redis.client_kill_filter(_type="normal", skipme=True)  # kills the pooled one
    assert await send_batch(redis, [("INCR", "again")]) == [1]
    assert await redis.get("again") == b"1"


async def test_a_cancelled_batch_never_leaves_replies_for_the_next(redis: Redis) -> None:
    waiting = asyncio.ensure_future(send_batch(redis, [("BLPOP", "nothing", 2)]))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await redis.rpush("nothing", "late")  # would be BLPOP's reply on a reused connection
    assert await send_batch(redis, [("PING",)]) in ([b"PONG"], [True])
    assert await redis.lrange("nothing", 0, -1) == [b"late"]


async def test_a_batch_past_the_socket_timeout_fails_and_drops_its_connection(
    redis_url: str,
) -> None:
    client = Redis.from_url(redis_url, socket_timeout=0.2)
    try:
        await client.delete("slow")
        with pytest.raises(RedisTimeoutError):
            await send_batch(client, [("PING",), ("BLPOP", "slow", 2)])
        await client.rpush("slow", "late")  # BLPOP's reply, were that connection reused
        assert await send_batch(client, [("PING",)]) in ([b"PONG"], [True])
        assert await client.lrange("slow", 0, -1) == [b"late"]
    finally:
        await client.delete("slow")
        await client.aclose()


async def test_early_hears_each_reply_before_a_blocking_last_command_returns(
    redis: Redis,
) -> None:
    loop = asyncio.get_running_loop()
    heard: list[tuple[int, Any, float]] = []
    started = loop.time()

    async def push_later() -> None:
        await asyncio.sleep(0.3)
        await redis.rpush("later", "x")

    pusher = asyncio.create_task(push_later())
    replies = await send_batch(
        redis,
        [("INCR", "e"), ("LPUSH", "e", "x"), ("BLPOP", "later", 2)],
        early=lambda i, reply: heard.append((i, reply, loop.time() - started)),
    )
    await pusher
    assert [i for i, _, _ in heard] == [0, 1]
    assert heard[0][1] == 1 and isinstance(heard[1][1], ResponseError)  # errors in place too
    assert all(at < 0.25 for _, _, at in heard)  # before BLPOP's answer, 0.3 s later
    assert replies[0] == 1 and replies[2] == [b"later", b"x"]
