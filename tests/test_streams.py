"""shared.bus.streams against a real Redis: the typed wrappers and the two commit scripts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.bus import names, streams
from shared.bus.streams import FieldMap, FieldValue

S, G = "t:events", "g"
RETRY = names.retry(S, G)


async def _pending_ids(redis: Redis, stream: str = S, group: str = G) -> list[str]:
    rows: Any = await redis.xpending_range(stream, group, "-", "+", 100)
    return [r["message_id"].decode() for r in rows]


async def _xrange(redis: Redis, key: str) -> list[tuple[str, dict[bytes, bytes]]]:
    rows: Any = await redis.xrange(key)
    return [(entry_id.decode(), fields) for entry_id, fields in rows]


async def _idle_past(redis: Redis, entry_id: str, ms: int) -> None:
    """Wait (bounded) until Redis reports ``entry_id`` idle for at least ``ms``."""
    async with asyncio.timeout(5):
        while True:
            rows: Any = await redis.xpending_range(S, G, entry_id, entry_id, 1)
            if rows and rows[0]["time_since_delivered"] >= ms:
                return
            await asyncio.sleep(0.01)


async def test_publish_read_ack(redis: Redis) -> None:
    assert await streams.ensure_group(redis, S, G, start="new") is True
    assert await streams.ensure_group(redis, S, G, start="new") is False  # BUSYGROUP tolerated
    first = await streams.publish(redis, S, {"data": b"one"})
    second = await streams.publish(redis, S, {b"data": "two", "n": 2})

    got = await streams.read_group(redis, S, G, "c1", count=10, block_ms=None)

    assert [(e.id, e.fields) for e in got] == [
        (first, {b"data": b"one"}),
        (second, {b"data": b"two", b"n": b"2"}),
    ]
    assert await streams.read_group(redis, S, G, "c1", count=10, block_ms=None) == []
    assert await _pending_ids(redis) == [first, second]
    assert await streams.ack(redis, S, G, first) == 1
    assert await _pending_ids(redis) == [second]


async def test_read_blocks_until_an_entry_arrives(redis: Redis) -> None:
    await streams.ensure_group(redis, S, G)
    reader = asyncio.create_task(streams.read_group(redis, S, G, "c1", count=1, block_ms=5000))
    await asyncio.sleep(0.05)
    entry_id = await streams.publish(redis, S, {"data": b"x"})
    assert [e.id for e in await reader] == [entry_id]


async def test_publish_trims_approximately(redis: Redis) -> None:
    for i in range(2000):
        await streams.publish(redis, S, {"data": str(i)}, maxlen=100)
    length = await redis.xlen(S)
    assert 100 <= length < 2000


async def test_new_group_skips_backlog_and_backlog_group_reads_it(redis: Redis) -> None:
    old = await streams.publish(redis, S, {"data": b"before"})
    await streams.ensure_group(redis, S, "fresh", start="new")
    await streams.ensure_group(redis, S, "history", start="backlog")
    new = await streams.publish(redis, S, {"data": b"after"})

    fresh = await streams.read_group(redis, S, "fresh", "c", count=10, block_ms=None)
    history = await streams.read_group(redis, S, "history", "c", count=10, block_ms=None)

    assert [e.id for e in fresh] == [new]
    assert [e.id for e in history] == [old, new]


async def test_claim_stale_only_after_idle_and_counts_deliveries(redis: Redis) -> None:
    await streams.ensure_group(redis, S, G)
    entry_id = await streams.publish(redis, S, {"data": b"x"})
    await streams.read_group(redis, S, G, "dead", count=1, block_ms=None)

    early = await streams.claim_stale(redis, S, G, "alive", min_idle_ms=60_000)
    assert early.entries == []
    await _idle_past(redis, entry_id, 50)
    claimed = await streams.claim_stale(redis, S, G, "alive", min_idle_ms=50)

    assert [e.id for e in claimed.entries] == [entry_id]
    assert claimed.entries[0].fields == {b"data": b"x"}
    assert claimed.cursor == "0-0"
    assert await streams.delivery_counts(redis, S, G, [entry_id, "1-1"]) == {entry_id: 2}
    (row,) = await redis.xpending_range(S, G, "-", "+", 10)
    assert row["consumer"] == b"alive"


async def test_claim_stale_reports_deleted_entries(redis: Redis) -> None:
    await streams.ensure_group(redis, S, G)
    kept = await streams.publish(redis, S, {"data": b"kept"})
    gone = await streams.publish(redis, S, {"data": b"gone"})
    await streams.read_group(redis, S, G, "dead", count=2, block_ms=None)
    await redis.xdel(S, gone)

    claimed = await streams.claim_stale(redis, S, G, "alive", min_idle_ms=0)

    assert [e.id for e in claimed.entries] == [kept]
    assert claimed.deleted == [gone]
    assert await _pending_ids(redis) == [kept]  # Redis dropped the deleted one from the PEL


async def test_commit_writes_outputs_and_acks_once(redis: Redis) -> None:
    await streams.ensure_group(redis, S, G)
    entry_id = await streams.publish(redis, S, {"data": b"x"})
    await streams.read_group(redis, S, G, "c", count=1, block_ms=None)
    await streams.schedule_retry(redis, RETRY, entry_id, 1)
    outputs: list[tuple[str, FieldMap]] = [
        ("t:out", {"data": b"a"}),
        ("t:out", {"data": b"b", "k": "v"}),
    ]

    done = await streams.commit(
        redis, stream=S, group=G, entry_id=entry_id, outputs=outputs, retry_key=RETRY
    )
    again = await streams.commit(
        redis, stream=S, group=G, entry_id=entry_id, outputs=outputs, retry_key=RETRY
    )

    assert (done, again) == (True, False)
    assert [f for _, f in await _xrange(redis, "t:out")] == [
        {b"data": b"a"},
        {b"data": b"b", b"k": b"v"},
    ]
    assert await _pending_ids(redis) == []
    assert await redis.zcard(RETRY) == 0


async def test_commit_trims_each_output_to_its_own_maxlen(redis: Redis) -> None:
    await streams.ensure_group(redis, S, G)
    for i in range(1500):
        await redis.xadd("t:short", {"n": i})
        await redis.xadd("t:long", {"n": i})
    entry_id = await streams.publish(redis, S, {"data": b"x"})
    await streams.read_group(redis, S, G, "c", count=1, block_ms=None)

    await streams.commit(
        redis,
        stream=S,
        group=G,
        entry_id=entry_id,
        outputs=[("t:short", {"n": "new"}, 100), ("t:long", {"n": "new"})],
        retry_key=RETRY,
        maxlen=None,
    )

    assert await redis.xlen("t:short") < 1000
    assert await redis.xlen("t:long") == 1501


async def test_commit_that_cannot_write_its_output_does_not_ack(redis: Redis) -> None:
    await streams.ensure_group(redis, S, G)
    entry_id = await streams.publish(redis, S, {"data": b"x"})
    await streams.read_group(redis, S, G, "c", count=1, block_ms=None)
    await redis.set("t:not-a-stream", "x")

    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await streams.commit(
            redis,
            stream=S,
            group=G,
            entry_id=entry_id,
            outputs=[("t:not-a-stream", {"data": b"a"})],
            retry_key=RETRY,
        )
    assert await _pending_ids(redis) == [entry_id]


async def test_dead_letter_moves_the_entry_with_its_fields(redis: Redis) -> None:
    await streams.ensure_group(redis, S, G)
    entry_id = await streams.publish(redis, S, {"data": b"payload"})
    await streams.read_group(redis, S, G, "c", count=1, block_ms=None)
    dlq = names.deadletter("t")
    fields: dict[str, FieldValue] = {
        "stream": S,
        "group": G,
        "id": entry_id,
        "attempts": 5,
        "error": "E: x",
    }

    dlq_id = await streams.dead_letter(
        redis,
        deadletter=dlq,
        stream=S,
        group=G,
        entry_id=entry_id,
        fields={**fields, "data": b"payload"},
        retry_key=RETRY,
    )
    twice = await streams.dead_letter(
        redis, deadletter=dlq, stream=S, group=G, entry_id=entry_id, fields=fields, retry_key=RETRY
    )

    assert twice is None
    ((got_id, got),) = await _xrange(redis, dlq)
    assert got_id == dlq_id
    assert got == {
        b"stream": S.encode(),
        b"group": b"g",
        b"id": entry_id.encode(),
        b"attempts": b"5",
        b"error": b"E: x",
        b"data": b"payload",
    }
    assert await _pending_ids(redis) == []


async def test_take_due_hands_each_id_to_one_caller(redis: Redis) -> None:
    await streams.schedule_retry(redis, RETRY, "1-0", 1_000)
    await streams.schedule_retry(redis, RETRY, "2-0", 2_000)
    await streams.schedule_retry(redis, RETRY, "3-0", 9_000)

    first, second = await asyncio.gather(
        streams.take_due(redis, RETRY, 5_000, 10), streams.take_due(redis, RETRY, 5_000, 10)
    )

    assert sorted(first + second) == ["1-0", "2-0"]
    assert await streams.deferred_until(redis, RETRY, ["1-0", "3-0"]) == {"3-0": 9_000}


async def test_group_figures_and_idle_consumer_removal(redis: Redis) -> None:
    assert await streams.groups(redis, "t:missing") == []
    await streams.ensure_group(redis, S, G)
    for i in range(3):
        await streams.publish(redis, S, {"data": str(i)})
    await streams.read_group(redis, S, G, "busy", count=1, block_ms=None)
    await streams.read_group(redis, S, G, "idle", count=1, block_ms=None)
    idle_entry = (await _pending_ids(redis))[1]
    await streams.ack(redis, S, G, idle_entry)
    await redis.xgroup_createconsumer(S, G, "me")

    (info,) = await streams.groups(redis, S)
    assert (info.name, info.consumers, info.pending, info.lag) == (G, 3, 1, 1)

    removed = await streams.remove_idle_consumers(redis, S, G, idle_ms=0, keep="me")
    assert removed == ["idle"]  # "busy" still has an entry pending; "me" is kept
    assert {c.name for c in await streams.consumers(redis, S, G)} == {"busy", "me"}
