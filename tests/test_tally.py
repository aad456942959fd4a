"""The per-minute counters the console charts: counted in memory, flushed to Redis in one go,
written by the ingress (stored callbacks, ack latency) and the sender (sends by errcode)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message

from services.ingress.app import create_app
from shared.bus import names, tally
from shared.bus.tally import Tally
from tests import helpers
from tests.helpers import post_callback, text_xml
from tests.sender_kit import sender_kit, text


@contextlib.asynccontextmanager
async def running(app: ASGIApp) -> AsyncIterator[None]:
    """The app's ASGI lifespan: started on entry, shut down on exit (as uvicorn does)."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.ensure_future(app(scope, inbox.get, outbox.put))
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await task


NOW = 1_800_000_000.0  # a minute boundary: 30_000_000 × 60


async def test_counts_reach_redis_in_one_flush_per_minute_key(redis: Redis) -> None:
    clock = [NOW + 5]
    counts = Tally("sends", clock=lambda: clock[0])
    counts.add("default", "0")
    counts.add("default", "0")
    counts.add("hr", "81013")
    clock[0] = NOW + 65  # the next minute
    counts.add("default", "0", 3)
    assert await counts.flush(redis, "wecom") == 3
    assert await counts.flush(redis, "wecom") == 0  # nothing new
    minutes = dict(await tally.read(redis, "wecom", "sends", 3, now=NOW + 65))
    assert minutes[int(NOW) // 60] == {"default|0": 2, "hr|81013": 1}
    assert minutes[int(NOW) // 60 + 1] == {"default|0": 3}
    key = names.stats("wecom", "sends", int(NOW) // 60)
    assert key == f"wecom:stats:sends:{int(NOW) // 60}"
    assert 0 < await redis.ttl(key) <= tally.TTL


async def test_a_failed_flush_keeps_the_counts_for_the_next(redis_url: str, redis: Redis) -> None:
    counts = Tally("sends", clock=lambda: NOW)
    counts.add("default", "0", 4)
    away = Redis.from_url(redis_url.rsplit(":", 1)[0] + ":1")  # nothing listens on port 1
    try:
        with pytest.raises((RedisError, OSError)):
            await counts.flush(away, "wecom")
    finally:
        await away.aclose()
    counts.add("default", "0")
    await counts.flush(redis, "wecom")
    assert dict(await tally.read(redis, "wecom", "sends", 1, now=NOW))[int(NOW) // 60] == {
        "default|0": 5
    }


async def test_run_flushes_once_more_when_stopped(redis: Redis) -> None:
    counts = Tally("callbacks", clock=lambda: NOW)
    stop = asyncio.Event()
    task = asyncio.create_task(counts.run(redis, "wecom", stop, interval=60))
    counts.ack("default", "stored", 0.0015)
    stop.set()
    await task
    [(_, minute)] = await tally.read(redis, "wecom", "callbacks", 1, now=NOW)
    assert minute == {
        "default|stored": 1,
        "default|ack_us": 1500,
        "default|ack_n": 1,
        "default|ack_le_2": 1,
    }


async def test_the_ingress_counts_stored_and_duplicate_callbacks(
    redis_url: str, redis: Redis
) -> None:
    # The lifespan runs the flusher; its end stops it, which flushes once more.
    app = create_app(helpers.settings(redis_url), redis=redis)
    transport = httpx.ASGITransport(app=app)
    async with (
        running(app),
        httpx.AsyncClient(transport=transport, base_url="http://ingress") as client,
    ):
        for msg_id in (1, 2, 2):  # the last is WeCom's retry of the second
            query, body = post_callback(text_xml("hi", msg_id=msg_id))
            assert (await client.post(f"/callback?{query}", content=body)).status_code == 200
    minutes = await tally.read(redis, "wecom", "callbacks", 2)
    total: dict[str, int] = {}
    for _, fields in minutes:
        for field, n in fields.items():
            total[field] = total.get(field, 0) + n
    assert total["default|stored"] == 2 and total["default|duplicate"] == 1
    assert total["default|ack_n"] == 3 and total["default|ack_us"] > 0
    assert sum(n for f, n in total.items() if "|ack_le_" in f) == 3


async def test_the_sender_counts_sends_by_errcode(redis_url: str) -> None:
    async with sender_kit(redis_url) as kit:
        kit.fault(81013)
        await kit.put(text("alice", "refused"))
        await kit.drain()
        await kit.put(text("alice", "accepted"))
        await kit.drain()
        await kit.handler.tally.flush(kit.redis, kit.settings.prefix)
        total: dict[str, int] = {}
        for _, fields in await tally.read(kit.redis, kit.settings.prefix, "sends", 2):
            for field, n in fields.items():
                total[field] = total.get(field, 0) + n
        assert total == {"default|81013": 1, "default|0": 1}
