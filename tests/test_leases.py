"""Long handlers: a running handler keeps its entry however long it runs (its lease is extended),
and a replica that dies mid-handler has its entry taken over within the claim window.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Mapping, Sequence

import pytest
from redis.asyncio import Redis

from shared.bus import leasing, streams, worker
from shared.bus.delivery import Delivery, Output
from shared.bus.options import ConsumerOptions
from shared.config import Settings, load_settings
from shared.errors import ConfigError
from tests.helpers import eventually
from tests.test_worker import DLQ, OUT, G, S, consumer, log_lines, records, spawn


def test_handler_timeout_is_its_own_setting_shared_by_the_options() -> None:
    assert Settings().handler_timeout == ConsumerOptions().handler_timeout == 300.0
    settings = load_settings({"BUS_CLAIM_IDLE": "5", "BUS_HANDLER_TIMEOUT": "90"})
    options = ConsumerOptions.from_settings(settings)
    assert (options.claim_idle, options.handler_timeout) == (5.0, 90.0)
    assert ConsumerOptions().maxlen == Settings().stream_maxlen == streams.DEFAULT_MAXLEN
    with pytest.raises(ConfigError, match="BUS_HANDLER_TIMEOUT"):
        load_settings({"BUS_HANDLER_TIMEOUT": "soon"})


async def test_a_handler_running_past_claim_idle_runs_once_on_two_consumers(
    redis: Redis,
) -> None:
    """Scaled down: claim window 1 s, handlers of 4 s, two consumers of one group."""
    await streams.ensure_group(redis, S, G, start="backlog")
    ids = [await streams.publish(redis, S, {"data": f"m{i}".encode()}) for i in range(4)]
    runs: list[tuple[str, int]] = []

    async def long_call(d: Delivery) -> Sequence[Output]:
        runs.append((d.entry_id, d.delivery_count))
        await asyncio.sleep(4.0)
        return [Output(OUT, {"id": d.entry_id})]

    pair = [
        consumer(redis, long_call, name=f"replica-{n}", claim_idle=1.0, concurrency=8)
        for n in (1, 2)
    ]
    tasks = [asyncio.create_task(c.run()) for c in pair]
    try:
        await eventually(lambda: _outputs_at_least(redis, len(ids)), timeout=30)
        await asyncio.sleep(1.5)  # a wrongful takeover would show up as a second run by now
    finally:
        for c in pair:
            c.stop()
        await asyncio.gather(*tasks)
    assert sorted(runs) == sorted((i, 1) for i in ids)  # each once, never redelivered
    outputs = [f[b"id"].decode() for f in await records(redis, OUT)]
    assert Counter(outputs) == Counter(ids)
    assert await records(redis, DLQ) == []
    assert sum(sum(c.stats.values()) for c in pair) == len(ids)


async def _outputs_at_least(redis: Redis, n: int) -> bool:
    return int(await redis.xlen(OUT)) >= n


async def test_a_killed_replicas_running_entry_is_taken_over(redis: Redis, redis_url: str) -> None:
    await streams.ensure_group(redis, S, G, start="backlog")
    entry_id = await streams.publish(redis, S, {"data": b"x"})
    victim = spawn(redis_url, "--name", "victim", "--sleep", "30", "--claim-idle-ms", "1000")
    try:
        await eventually(lambda: _has_line(redis, f"start {entry_id} 1"), timeout=20)
        await asyncio.sleep(2.5)  # past the claim window: the lease keeps it with the victim
        (held,) = await redis.xpending_range(S, G, "-", "+", 10)
        assert (held["consumer"], held["times_delivered"]) == (b"victim", 1)
    finally:
        victim.kill()
        await asyncio.to_thread(victim.wait)
    taken: list[int] = []

    async def survivor(d: Delivery) -> Sequence[Output]:
        taken.append(d.delivery_count)
        return [Output(OUT, {"id": d.entry_id})]

    c = consumer(redis, survivor, name="survivor", claim_idle=1.0)
    await asyncio.wait_for(c.run_burst(), 15)
    assert taken == [2]
    assert [f[b"id"].decode() for f in await records(redis, OUT)] == [entry_id]
    assert await records(redis, DLQ) == []


async def _has_line(redis: Redis, line: str) -> bool:
    return line in await log_lines(redis)


@pytest.mark.slow
async def test_forty_second_handlers_with_a_five_second_claim_window(
    redis: Redis, redis_url: str
) -> None:
    """The issue's numbers, as real processes: BUS_CLAIM_IDLE=5, two replicas, 40 s handlers."""
    await streams.ensure_group(redis, S, G, start="backlog")
    ids = [await streams.publish(redis, S, {"data": f"m{i}".encode()}) for i in range(3)]
    replicas = [
        spawn(redis_url, "--name", f"r{n}", "--sleep", "40", "--claim-idle-ms", "5000")
        for n in (1, 2)
    ]
    try:
        await eventually(lambda: _outputs_at_least(redis, len(ids)), timeout=70)
        await asyncio.sleep(1.0)
    finally:
        for proc in replicas:
            proc.terminate()
        for proc in replicas:
            await asyncio.to_thread(proc.wait, 30)
    starts = [line for line in await log_lines(redis) if line.startswith("start")]
    assert sorted(starts) == sorted(f"start {i} 1" for i in ids)  # once each, first delivery
    outputs = [f[b"id"].decode() for f in await records(redis, OUT)]
    assert Counter(outputs) == Counter(ids)
    assert await records(redis, DLQ) == []


@pytest.mark.parametrize("ending", ["burst", "stop"])
async def test_the_run_ends_even_when_a_lease_step_loses_its_cancellation(
    redis: Redis, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """On Python 3.11 a cancel can be lost inside a Redis call: redis-py wraps each command's
    write in ``asyncio.wait_for``, which returns the result instead of raising when the cancel
    lands just as the write finishes. A run must still end (it once hung in ``run_burst``)."""
    leased = asyncio.Event()

    async def renew_then_lose_the_cancel(
        redis: Redis, stream: str, group: str, name: str, running: Mapping[str, asyncio.Task[None]]
    ) -> None:
        await leasing.renew_leases(redis, stream, group, name, running)
        if not leased.is_set():
            leased.set()
            with contextlib.suppress(asyncio.CancelledError):  # held here; the cancel is lost
                await asyncio.Event().wait()

    monkeypatch.setattr(worker, "renew_leases", renew_then_lose_the_cancel)
    ids = [await streams.publish(redis, S, {"data": f"m{i}".encode()}) for i in range(3)]

    async def handler(d: Delivery) -> Sequence[Output]:
        await leased.wait()  # so the lease loop is held (the cancel lands there) before any ack
        return [Output(OUT, {"id": d.entry_id})]

    c = consumer(redis, handler)
    if ending == "burst":
        assert await asyncio.wait_for(c.run_burst(), 10) == {"ok": 3}
    else:
        run = asyncio.create_task(c.run())
        await eventually(lambda: _outputs_at_least(redis, len(ids)))
        c.stop()
        await asyncio.wait_for(run, 10)
    assert sorted(f[b"id"].decode() for f in await records(redis, OUT)) == sorted(ids)
