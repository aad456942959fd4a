"""shared.bus.worker against a real Redis, and as real processes for SIGKILL and SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from devkit.embedded_redis import EmbeddedRedis
from shared.bus import names, streams
from shared.bus.delivery import Delivery, Output, Reject, Retry
from shared.bus.options import ConsumerOptions
from shared.bus.worker import Consumer, observe_groups
from shared.errors import SchemaError
from tests.helpers import eventually

S, G, OUT, LOG = "t:events", "g", "t:out", "t:log"
DLQ = names.deadletter("t")
WORKER_SCRIPT = Path(__file__).parent / "workers" / "consumer.py"


async def records(redis: Redis, key: str) -> list[dict[bytes, bytes]]:
    """The field maps of every entry of stream ``key``, oldest first."""
    rows: Any = await redis.xrange(key)
    return [fields for _, fields in rows]


async def output_ids(redis: Redis, key: str = OUT) -> list[str]:
    return [fields[b"id"].decode() for fields in await records(redis, key)]


async def pending(redis: Redis, group: str = G) -> int:
    return int((await redis.xpending(S, group))["pending"])


def consumer(
    redis: Redis, handler: Callable[[Delivery], Awaitable[Sequence[Output]]], **kw: Any
) -> Consumer:
    """A consumer of S/G; ``kw`` are ConsumerOptions (or ``stream``/``group``) over fast ones."""
    where = {"stream": kw.pop("stream", S), "group": kw.pop("group", G)}
    options: dict[str, Any] = {
        "prefix": "t",
        "block_ms": 100,
        "claim_idle": 0.2,
        "start": "backlog",
        "housekeeping_interval": 0.1,
    }
    return Consumer(redis, handler=handler, options=ConsumerOptions(**{**options, **kw}), **where)


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Consumer], Awaitable[None]]]:
    """Start consumers in the background; they are stopped (and awaited) after the test."""
    started: list[tuple[Consumer, asyncio.Task[None]]] = []

    async def start(c: Consumer) -> None:
        started.append((c, asyncio.create_task(c.run())))
        await eventually(lambda: _true(c.healthy))

    yield start
    for c, _ in started:
        c.stop()
    for _, task in started:
        await asyncio.wait_for(task, 10)


async def _true(value: bool) -> bool:
    return value


def echo_to(stream: str) -> Callable[[Delivery], Awaitable[Sequence[Output]]]:
    async def handler(d: Delivery) -> Sequence[Output]:
        return [Output(stream, {"id": d.entry_id, "data": d.fields[b"data"]})]

    return handler


async def test_burst_processes_everything_and_returns(redis: Redis) -> None:
    ids = [await streams.publish(redis, S, {"data": f"m{i}"}) for i in range(5)]

    stats = await asyncio.wait_for(consumer(redis, echo_to(OUT)).run_burst(), 10)

    assert stats == {"ok": 5}
    assert sorted(await output_ids(redis)) == sorted(ids)
    assert await pending(redis) == 0


async def test_output_exists_if_and_only_if_the_entry_was_acked(redis: Redis) -> None:
    await redis.set("t:not-a-stream", "x")
    good = await streams.publish(redis, S, {"data": b"good"})
    bad = await streams.publish(redis, S, {"data": b"bad"})

    async def handler(d: Delivery) -> Sequence[Output]:
        target = OUT if d.entry_id == good else "t:not-a-stream"
        return [Output(target, {"id": d.entry_id})]

    c = consumer(redis, handler, max_deliveries=2, claim_idle=0.05)
    await asyncio.wait_for(c.run_burst(), 10)

    assert await output_ids(redis) == [good]
    (letter,) = await records(redis, DLQ)  # the bad one: never acked without its output
    assert letter[b"id"].decode() == bad
    assert letter[b"error"].startswith(b"ResponseError: WRONGTYPE")
    assert c.stats == {"ok": 1, "failed": 1, "deadlettered": 1}


async def test_poison_entry_is_dead_lettered_after_max_deliveries(redis: Redis) -> None:
    entry_id = await streams.publish(redis, S, {"data": b"poison"})
    seen: list[int] = []

    async def handler(d: Delivery) -> Sequence[Output]:
        seen.append(d.delivery_count)
        raise ValueError(f"cannot parse\nattempt {d.delivery_count}")

    c = consumer(redis, handler, max_deliveries=3, claim_idle=0.05)
    stats = await asyncio.wait_for(c.run_burst(), 10)

    assert seen == [1, 2, 3]
    assert stats == {"failed": 2, "deadlettered": 1}
    (letter,) = await records(redis, DLQ)
    assert letter[b"stream"] == S.encode()
    assert letter[b"group"] == G.encode()
    assert letter[b"id"].decode() == entry_id
    assert letter[b"attempts"] == b"3"
    assert letter[b"error"] == b"ValueError: cannot parse attempt 3"
    assert letter[b"data"] == b"poison"
    assert abs(float(letter[b"time"]) - time.time()) < 60
    assert await pending(redis) == 0


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (Reject("unknown member"), b"Reject: unknown member"),
        (
            SchemaError("$.text.content", "is 2100 bytes in UTF-8; WeCom accepts 2048"),
            b"SchemaError: $.text.content: is 2100 bytes in UTF-8; WeCom accepts 2048",
        ),
    ],
    ids=["reject", "schema-error"],
)
async def test_deterministic_failures_are_dead_lettered_at_once_with_their_reason(
    redis: Redis, error: Exception, line: bytes
) -> None:
    await streams.publish(redis, S, {"data": b"x"})
    calls = 0

    async def handler(d: Delivery) -> Sequence[Output]:
        nonlocal calls
        calls += 1
        raise error

    stats = await asyncio.wait_for(consumer(redis, handler, max_deliveries=5).run_burst(), 10)

    assert (calls, stats) == (1, {"rejected": 1})  # not five deliveries
    (letter,) = await records(redis, DLQ)
    assert (letter[b"attempts"], letter[b"error"]) == (b"1", line)


async def test_slow_handler_times_out_and_counts_as_a_failure(redis: Redis) -> None:
    await streams.publish(redis, S, {"data": b"x"})

    async def slow(d: Delivery) -> Sequence[Output]:
        await asyncio.sleep(30)
        return []

    c = consumer(redis, slow, max_deliveries=1, handler_timeout=0.05)
    assert await asyncio.wait_for(c.run_burst(), 10) == {"deadlettered": 1}
    (letter,) = await records(redis, DLQ)
    assert letter[b"error"] == b"TimeoutError: handler ran longer than 0.05s"


async def test_entry_whose_consumers_keep_dying_is_dead_lettered(redis: Redis) -> None:
    await streams.ensure_group(redis, S, G)
    entry_id = await streams.publish(redis, S, {"data": b"x"})
    await streams.read_group(redis, S, G, "dead", count=1, block_ms=None)
    await streams.set_delivery_count(redis, S, G, "dead", entry_id, 3)  # died three times
    calls = 0

    async def handler(d: Delivery) -> Sequence[Output]:
        nonlocal calls
        calls += 1
        return []

    c = consumer(redis, handler, max_deliveries=3, claim_idle=0.02)
    assert await asyncio.wait_for(c.run_burst(), 10) == {"deadlettered": 1}
    assert calls == 0
    (letter,) = await records(redis, DLQ)
    assert (letter[b"attempts"], letter[b"error"]) == (
        b"4",
        b"no outcome after 3 deliveries (consumer died or was killed)",
    )


@pytest.mark.parametrize(
    ("defer", "claim_idle"),
    [(0.6, 0.1), (0.1, 30.0)],
    ids=["defer-longer-than-claim-idle", "defer-shorter-than-claim-idle"],
)
async def test_retry_redelivers_the_same_entry_after_the_delay(
    redis: Redis, defer: float, claim_idle: float
) -> None:
    entry_id = await streams.publish(redis, S, {"data": b"x"})
    attempts: list[tuple[str, int, float]] = []

    async def handler(d: Delivery) -> Sequence[Output]:
        attempts.append((d.entry_id, d.delivery_count, time.time()))
        if d.delivery_count == 1:
            raise Retry(defer=defer)
        return []

    c = consumer(redis, handler, claim_idle=claim_idle)
    # Within 10 s even when claim_idle is 30 s: a due retry does not wait for claim_idle.
    stats = await asyncio.wait_for(c.run_burst(), 10)

    assert stats == {"retry": 1, "ok": 1}
    (first_id, first, t1), (second_id, second, t2) = attempts
    assert first_id == second_id == entry_id
    assert (first, second) == (1, 2)  # an early XAUTOCLAIM did not count a delivery
    assert t2 - t1 >= defer


async def test_concurrency_is_bounded(redis: Redis) -> None:
    for i in range(12):
        await streams.publish(redis, S, {"data": str(i)})
    active = peak = 0

    async def handler(d: Delivery) -> Sequence[Output]:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1
        return []

    stats = await asyncio.wait_for(consumer(redis, handler, concurrency=3).run_burst(), 10)

    assert stats == {"ok": 12}
    assert peak == 3


async def test_two_groups_each_see_every_event(redis: Redis) -> None:
    ids = [await streams.publish(redis, S, {"data": f"m{i}"}) for i in range(4)]

    await asyncio.wait_for(consumer(redis, echo_to("t:out-a"), group="a").run_burst(), 10)
    await asyncio.wait_for(consumer(redis, echo_to("t:out-b"), group="b").run_burst(), 10)

    for out in ("t:out-a", "t:out-b"):
        assert sorted(await output_ids(redis, out)) == sorted(ids)


async def test_deleted_group_and_flushed_stream_heal(
    redis: Redis, running: Callable[[Consumer], Awaitable[None]], caplog: pytest.LogCaptureFixture
) -> None:
    async def outputs() -> int:
        return int(await redis.xlen(OUT))

    worker = consumer(redis, echo_to(OUT), start="new")
    await running(worker)
    await streams.publish(redis, S, {"data": b"1"})
    await eventually(lambda: _equals(outputs(), 1))
    # Work still in flight when the group vanishes is delivered again (at least once): wait
    # until the delivery has finished, so that the counts below are exact.
    await eventually(lambda: _true(worker.in_flight == 0))

    with caplog.at_level(logging.WARNING, logger="wecom_bus.bus"):
        await redis.xgroup_destroy(S, G)
        await streams.publish(redis, S, {"data": b"2"})
        await eventually(lambda: _equals(outputs(), 2))
        await eventually(lambda: _true(worker.in_flight == 0))
        await redis.delete(S)
        await streams.publish(redis, S, {"data": b"3"})
        await eventually(lambda: _equals(outputs(), 3))

    assert [f[b"data"] for f in await records(redis, OUT)] == [b"1", b"2", b"3"]
    assert sum("recreated" in r.getMessage() for r in caplog.records) >= 2


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_dead_consumers_are_removed_but_not_those_with_pending_work(
    redis: Redis, running: Callable[[Consumer], Awaitable[None]]
) -> None:
    await streams.ensure_group(redis, S, G)
    await redis.xgroup_createconsumer(S, G, "ghost")
    await streams.publish(redis, S, {"data": b"held"})
    await streams.read_group(redis, S, G, "holder", count=1, block_ms=None)

    async def ghost_gone() -> bool:
        left = {c.name for c in await streams.consumers(redis, S, G)}
        return "ghost" not in left and "holder" in left

    async def hold(d: Delivery) -> Sequence[Output]:
        raise Retry(defer=60)  # keeps "holder"'s entry pending, whoever claims it

    await running(consumer(redis, hold, dead_consumer_idle=0.1, claim_idle=60))
    await eventually(ghost_gone)


async def test_health_and_metrics(
    redis: Redis, running: Callable[[Consumer], Awaitable[None]]
) -> None:
    c = consumer(redis, echo_to(OUT))
    await running(c)
    await streams.publish(redis, S, {"data": b"x"})
    await eventually(lambda: _equals(redis.xlen(OUT), 1))

    assert c.healthy
    ok = REGISTRY.get_sample_value(
        "wecom_consumer_processed_total", {"stream": S, "group": G, "outcome": "ok"}
    )
    assert ok is not None and ok >= 1
    await streams.publish(redis, S, {"data": b"unread"}, maxlen=None)
    await redis.xgroup_create(S, "idle-group", id="0")
    await observe_groups(redis, S)
    lag = REGISTRY.get_sample_value("wecom_stream_group_lag", {"stream": S, "group": "idle-group"})
    assert lag == 2

    c.stop()
    await eventually(lambda: _true(not c.healthy))


def _gauge(name: str, group: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"stream": S, "group": group})


async def test_entries_trimmed_before_a_group_read_them_are_counted_and_logged(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await streams.ensure_group(redis, S, "slow", start="new")
    for n in range(10):
        await streams.publish(redis, S, {"n": n}, maxlen=None)
    await streams.read_group(redis, S, "slow", "c", count=2, block_ms=None)  # read 2 of 10
    await redis.xtrim(S, maxlen=3, approximate=False)  # 5 it never read are gone

    with caplog.at_level(logging.WARNING, logger="wecom_bus.bus"):
        await observe_groups(redis, S)
    assert _gauge("wecom_stream_group_trimmed_unread", "slow") == 5
    assert _gauge("wecom_stream_group_lag", "slow") == 3  # what is left to read, not 8
    (record,) = [r for r in caplog.records if "trimming removed" in r.getMessage()]
    assert record.__dict__["trimmed_unread"] == 5

    await streams.read_group(redis, S, "slow", "c", count=10, block_ms=None)  # caught up
    await observe_groups(redis, S)
    assert _gauge("wecom_stream_group_trimmed_unread", "slow") == 5  # the loss is remembered
    assert _gauge("wecom_stream_group_lag", "slow") == 0


async def test_survives_a_redis_outage(caplog: pytest.LogCaptureFixture) -> None:
    server = EmbeddedRedis()
    client: Redis = Redis.from_url(server.url)
    options = ConsumerOptions(block_ms=100, start="backlog")
    c = Consumer(client, stream=S, group=G, handler=echo_to(OUT), options=options)
    with caplog.at_level(logging.WARNING, logger="wecom_bus.bus"):
        task = asyncio.create_task(c.run())  # Redis is not there yet
        await eventually(
            lambda: _true(any("unreachable" in r.getMessage() for r in caplog.records))
        )
        assert not c.healthy
        await asyncio.to_thread(server.start)
        try:
            await streams.publish(client, S, {"data": b"x"})
            await eventually(lambda: _equals(client.xlen(OUT), 1))
            await eventually(lambda: _true(c.healthy))
            await asyncio.to_thread(server.kill)  # a second outage, mid-run
            await eventually(lambda: _true(not c.healthy))
            await asyncio.to_thread(server.start)
            async with Redis.from_url(server.url) as fresh:  # the pool's connections are dead
                await streams.publish(fresh, S, {"data": b"y"})
                await eventually(lambda: _contains_data(records(fresh, OUT), b"y"))
            await eventually(lambda: _true(c.healthy))
            c.stop()
            await asyncio.wait_for(task, 10)
        finally:
            await client.aclose()
            await asyncio.to_thread(server.stop)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 2  # once per outage, not per attempt
    assert sum("reachable again" in m for m in messages) == 2


async def _contains_data(entries: Awaitable[list[dict[bytes, bytes]]], data: bytes) -> bool:
    return any(fields[b"data"] == data for fields in await entries)


def spawn(redis_url: str, *args: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, str(WORKER_SCRIPT), redis_url, "--stream", S, "--group", G]
    return subprocess.Popen([*argv, "--log", LOG, "--out", OUT, *args])


async def log_lines(redis: Redis) -> list[str]:
    lines: list[bytes] = await redis.lrange(LOG, 0, -1)  # type: ignore[assignment]
    return [line.decode() for line in lines]


async def test_sigkilled_process_work_is_claimed_and_completed(
    redis: Redis, redis_url: str
) -> None:
    await streams.ensure_group(redis, S, G, start="backlog")
    ids = [await streams.publish(redis, S, {"data": f"m{i}"}) for i in range(10)]
    victim = spawn(redis_url, "--name", "victim", "--sleep", "0.3", "--claim-idle-ms", "300")

    async def mid_batch() -> bool:  # the first batch of 4 is done, the second one is running
        lines = await log_lines(redis)
        return sum(x.startswith("end") for x in lines) >= 4 and len(lines) - 4 >= 5

    try:
        await eventually(mid_batch, timeout=20)
    finally:
        victim.kill()
        await asyncio.to_thread(victim.wait)
    victim_done = {x.split()[1] for x in await log_lines(redis) if x.startswith("end")}
    claimed: list[int] = []

    async def survivor(d: Delivery) -> Sequence[Output]:
        claimed.append(d.delivery_count)
        return [Output(OUT, {"id": d.entry_id, "data": d.fields[b"data"]})]

    c = consumer(redis, survivor, name="survivor", claim_idle=0.3)
    await asyncio.wait_for(c.run_burst(), 20)

    out_ids = await output_ids(redis)
    assert Counter(out_ids) == Counter(ids)  # every entry exactly once: none lost, none doubled
    assert await pending(redis) == 0
    assert len(claimed) == len(ids) - len(victim_done)
    assert 2 in claimed  # some were reclaimed from the dead process, not read fresh


async def test_sigterm_finishes_in_flight_work_and_exits_zero(redis: Redis, redis_url: str) -> None:
    await streams.ensure_group(redis, S, G, start="backlog")
    entry_id = await streams.publish(redis, S, {"data": b"x"})
    proc = spawn(redis_url, "--sleep", "1.0", "--drain-timeout", "10")
    try:
        await eventually(lambda: _contains(log_lines(redis), f"start {entry_id} 1"), timeout=20)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 15)
    finally:
        proc.kill()
    assert code == 0
    assert await log_lines(redis) == [f"start {entry_id} 1", f"end {entry_id}", "exited"]
    assert await output_ids(redis) == [entry_id]
    assert await pending(redis) == 0


async def _contains(lines: Awaitable[list[str]], line: str) -> bool:
    return line in await lines


async def test_a_failing_step_is_logged_and_makes_the_consumer_unready_until_it_recovers(
    redis: Redis, running: Callable[[Consumer], Awaitable[None]], caplog: pytest.LogCaptureFixture
) -> None:
    c = consumer(redis, echo_to(OUT))
    await running(c)
    await redis.set(names.retry(S, G), "not a zset")  # the claimer's next round: WRONGTYPE
    with caplog.at_level(logging.ERROR, logger="wecom_bus.bus"):
        await eventually(lambda: _true(not c.healthy))
    failed = [r for r in caplog.records if r.getMessage() == "consumer step failed"]
    assert failed and failed[0].__dict__["step"] == "claim"
    assert failed[0].exc_info is not None and "WRONGTYPE" in str(failed[0].exc_info[1])
    await redis.delete(names.retry(S, G))
    await eventually(lambda: _true(c.healthy))
    await streams.publish(redis, S, {"data": b"after"})
    await eventually(lambda: _equals(redis.xlen(OUT), 1))


async def test_stop_wakes_a_reader_sleeping_between_reads(redis: Redis) -> None:
    handled: list[str] = []

    async def handler(delivery: Delivery) -> Sequence[Output]:
        handled.append(delivery.entry_id)
        return []

    options = ConsumerOptions(prefix="t", block_ms=100, read_linger=1.0, start="backlog")
    worker = Consumer(redis, stream=S, group=G, handler=handler, options=options)
    task = asyncio.create_task(worker.run())
    await redis.xadd(S, {"n": "1"})
    await eventually(lambda: asyncio.sleep(0, bool(handled)))  # the reader now lingers 1 s
    started = time.monotonic()
    worker.stop()
    async with asyncio.timeout(5):
        await task
    assert time.monotonic() - started < 0.5
