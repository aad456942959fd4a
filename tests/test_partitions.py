"""BUS_PARTITIONS, BUS_MIN_REPLICAS and per-member order on a real Redis (one server)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from services.ingress.app import create_app
from shared.bus import names, ordering, partitions, streams
from shared.bus.deadletter import DeadLetters
from shared.bus.delivery import Delivery, Output, Reject
from shared.bus.options import ConsumerOptions
from shared.bus.outbox import enqueue
from shared.bus.partitioned import PartitionedConsumer
from shared.bus.scripts import NotReplicated, Script, TickPipeline
from shared.errors import ConfigError
from tests import helpers


def test_one_partition_keeps_every_name_and_more_get_one_tag_each() -> None:
    assert names.partitions("wecom", 1) == ["wecom"]
    assert names.events(names.partition("wecom", 0, 1)) == "wecom:events"
    parts = names.partitions("wecom", 3)
    assert [names.events(p) for p in parts] == [f"wecom:{{p{i}}}:events" for i in range(3)]
    assert names.seen(parts[2], "hr", "msg:1") == "wecom:{p2}:seen:hr:msg:1"
    assert names.partition_of("wecom:{p2}:outbox", "wecom") == "wecom:{p2}"
    assert names.partition_of("wecom:outbox", "wecom") == "wecom"
    with pytest.raises(ValueError, match="partition 3"):
        names.partition("wecom", 3, 3)


def test_a_member_always_maps_to_the_same_partition() -> None:
    # crc32 is fixed: these values hold in every process and version.
    assert [partitions.index("default", f"user{i}", 8) for i in range(6)] == [
        partitions.index("default", f"user{i}", 8) for i in range(6)
    ]
    spread = {partitions.index("default", f"user{i}", 8) for i in range(200)}
    assert spread == set(range(8))
    assert partitions.index("default", "anyone", 1) == 0
    assert partitions.event_member({"OpenKfId": "wkAB", "Event": "kf_msg_or_event"}) == "wkAB"
    assert partitions.event_member({"FromUserName": "sys"}) == "sys"
    assert partitions.event_member({}) == ""


def test_settings_refuse_what_would_put_everything_in_one_slot_or_fail_crossslot() -> None:
    with pytest.raises(ConfigError) as caught:
        helpers.settings("redis://x", BUS_PREFIX="{wecom}", BUS_PARTITIONS="4")
    assert caught.value.variable == "BUS_PARTITIONS"
    cluster = "redis+cluster://127.0.0.1:7000"
    with pytest.raises(ConfigError) as caught:
        helpers.settings(cluster).require_redis()
    assert caught.value.variable == "BUS_PREFIX"
    assert "BUS_PARTITIONS" in str(caught.value)
    assert helpers.settings(cluster, BUS_PARTITIONS="8").require_redis() == cluster
    assert helpers.settings(cluster, BUS_PREFIX="{wecom}").require_redis() == cluster
    # BUS_MIN_REPLICAS is kept on a cluster too (tests/test_cluster_wait.py).
    assert helpers.settings(cluster, BUS_PARTITIONS="8", BUS_MIN_REPLICAS="1").require_redis()


async def _post(app: object, text: str, member: str, msg_id: int) -> int:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        query, body = helpers.post_callback(helpers.text_xml(text, from_user=member, msg_id=msg_id))
        return (await client.post(f"/callback?{query}", content=body)).status_code


async def test_ingress_puts_a_member_in_its_partition_with_a_sequence(
    redis_url: str, redis: Redis
) -> None:
    settings = helpers.settings(redis_url, BUS_PARTITIONS="4")
    app = create_app(settings, redis=redis)
    for n, member in enumerate(["alice", "bob", "alice"], start=1):
        assert await _post(app, f"hi {n}", member, n) == 200
    alice = partitions.prefix_for("wecom", 4, "default", "alice")
    rows: Any = await redis.xrange(names.events(alice))
    texts = [(json.loads(f[b"data"])["event"]["Content"], f[b"oseq"]) for _, f in rows]
    assert [t for t in texts if t[0] != "hi 2"] == [("hi 1", b"1"), ("hi 3", b"2")]
    assert await redis.exists(names.seen(alice, "default", "msg:1"))
    assert not await redis.exists("wecom:events")


async def test_min_replicas_without_replicas_answers_503_so_wecom_retries(
    redis_url: str, redis: Redis
) -> None:
    settings = helpers.settings(redis_url, BUS_MIN_REPLICAS="1", BUS_MIN_REPLICAS_TIMEOUT="50")
    assert await _post(create_app(settings, redis=redis), "hi", "alice", 7) == 503
    relaxed = helpers.settings(redis_url)  # the retry finds the mark: stored once, 200
    assert await _post(create_app(relaxed, redis=redis), "hi", "alice", 7) == 200
    assert await redis.xlen("wecom:events") == 1


async def test_send_api_enqueues_by_recipient(redis_url: str, redis: Redis) -> None:
    settings = helpers.settings(redis_url, BUS_PARTITIONS="4")
    body = json.dumps({"touser": "bob", "msgtype": "text", "text": {"content": "x"}}).encode()
    await enqueue(redis, settings, body, origin="api")
    bob = partitions.prefix_for("wecom", 4, "default", "bob")
    assert await redis.xlen(names.outbox(bob)) == 1


async def test_dead_letters_of_every_partition_are_listed_and_replayed(redis: Redis) -> None:
    parts = names.partitions("pl", 3)

    async def reject(delivery: Delivery) -> list[Output]:
        raise Reject("no")

    for part in parts[1:]:
        await redis.xadd(names.events(part), {"data": json.dumps({"p": part})})
    consumer = PartitionedConsumer(
        redis,
        streams=[names.events(p) for p in parts],
        group="g",
        handler=reject,
        options=ConsumerOptions(prefix="pl", start="backlog"),
    )
    assert (await consumer.run_burst())["rejected"] == 2
    letters = DeadLetters(redis, "pl", partitions=3)
    found = await letters.list()
    assert [x.id.split("/")[0] for x in found] == ["p1", "p2"]
    assert await letters.count() == 2
    with pytest.raises(ValueError, match="p0/"):
        await letters.get(found[0].id.split("/")[1])
    [replayed] = (await letters.replay([found[1].id])).items
    assert (replayed.outcome, replayed.stream) == ("pending", names.events(parts[2]))
    assert await letters.drop([found[0].id]) == [found[0].id]
    assert await letters.count() == 0


async def test_entry_n_waits_for_n_minus_one_then_goes_ahead_at_the_bound(redis: Redis) -> None:
    stream = "ord:events"
    await streams.ensure_group(redis, stream, "g")
    first = await streams.publish(redis, stream, {"okey": "a/m", "oseq": 1})
    second = await streams.publish(redis, stream, {"okey": "a/m", "oseq": 2})
    await streams.read_group(redis, stream, "g", "c", count=2, block_ms=None)
    waiting = asyncio.create_task(
        ordering.wait_turn(redis, stream, "g", second, ("a/m", 2), bound=30)
    )
    await asyncio.sleep(0.2)
    assert not waiting.done()  # 1 is not committed yet
    await streams.commit(
        redis,
        stream=stream,
        group="g",
        entry_id=first,
        outputs=[("ord:outbox", {"data": "r1"}, None, "a/m")],
        retry_key=names.retry(stream, "g"),
        order=("a/m", 1),
    )
    assert await asyncio.wait_for(waiting, 5) is True
    written: Any = await redis.xrange("ord:outbox")
    [(_, out)] = written
    assert (out[b"okey"], out[b"oseq"]) == (b"a/m", b"1")
    # Entry 5 whose predecessor never commits goes ahead once its bound has passed.
    started = time.monotonic()
    late = f"{int(time.time() * 1000)}-0"
    assert await ordering.wait_turn(redis, stream, "g", late, ("a/m", 5), bound=0.3) is False
    assert time.monotonic() - started < 5


async def _waits(redis: Redis) -> int:
    stats: Any = await redis.info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


async def test_a_batch_closes_with_one_wait_and_each_call_learns_the_shortfall(
    redis: Redis,
) -> None:
    """BUS_MIN_REPLICAS with batching: the calls of one tick share one WAIT; without replicas
    every call fails NotReplicated while its write stands on the primary."""
    count = Script("return redis.call('INCR', KEYS[1])")
    batch = count.batch(redis, wait=(1, 50))
    await count(redis, ["wb:loaded"])  # loaded: a NOSCRIPT resend would add its own WAIT
    before = await _waits(redis)
    found = await asyncio.gather(*(batch.call(["wb:n"]) for _ in range(3)), return_exceptions=True)
    assert [type(r) for r in found] == [NotReplicated] * 3
    assert await _waits(redis) == before + 1
    assert await redis.get("wb:n") == b"3"
    ticks = TickPipeline(redis, wait=(1, 50))
    outs = await asyncio.gather(*(ticks.run(lambda pipe: pipe.incr("wb:m")) for _ in range(2)))
    assert [type(o[0]) for o in outs] == [NotReplicated] * 2
    assert await _waits(redis) == before + 2
    with pytest.raises(ValueError):
        TickPipeline(redis, transaction=True, wait=(1, 50))  # WAIT does not block in MULTI
