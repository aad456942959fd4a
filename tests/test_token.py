"""TokenCache on a real Redis: one gettoken per token lifetime across replicas, and failure modes.

Separate Redis clients stand in for separate sender processes; WeCom's gettoken is a counting
coroutine (the client's HTTP side is covered in test_wecom_client.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from devkit.embedded_redis import EmbeddedRedis, free_port
from shared.wecom import (
    PermanentAPIError,
    RateLimitedError,
    RetryableAPIError,
    TokenCache,
    WeComAPIError,
    WeComUnavailableError,
)

KEY = "wecom:token:{wwcorp:1000002}"
LOCK = "wecom:token-lock:{wwcorp:1000002}"


class Fetcher:
    """Stands in for WeComClient.gettoken: counts calls and hands out token-1, token-2, …"""

    def __init__(
        self,
        *,
        expires_in: int = 7200,
        delay: float = 0.0,
        gate: asyncio.Event | None = None,
        error: Exception | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.calls = 0
        self.expires_in = expires_in
        self.delay = delay
        self.gate = gate
        self.error = error
        self.clock = clock
        self.called_at: list[float] = []
        self.started = asyncio.Event()

    async def __call__(self) -> tuple[str, int]:
        self.calls += 1
        if self.clock is not None:
            self.called_at.append(self.clock())
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)  # widens the race window; nothing is timed
        if self.error is not None:
            raise self.error
        return f"token-{self.calls}", self.expires_in


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def make_cache(
    redis: Redis, fetch: Callable[[], Awaitable[tuple[str, int]]], **kw: Any
) -> TokenCache:
    return TokenCache(redis, fetch, corp_id="wwcorp", agent_id=1000002, **kw)


@pytest.fixture
async def processes(redis: Redis, redis_url: str) -> AsyncIterator[list[Redis]]:
    """Three independent clients, as three sender replicas would have (on the flushed DB)."""
    clients = [Redis.from_url(redis_url) for _ in range(3)]
    try:
        yield clients
    finally:
        for client in clients:
            await client.aclose()


def dead_redis() -> Redis:
    """A client for a port nothing listens on, failing fast instead of retrying."""
    return Redis(port=free_port(), retry=Retry(NoBackoff(), 0), socket_connect_timeout=0.5)


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_first_get_fetches_and_then_every_replica_reads_the_cache(
    redis: Redis, processes: list[Redis]
) -> None:
    before = counter("wecom_gettoken_calls_total", app="hit", outcome="ok")
    fetch = Fetcher()
    first = make_cache(processes[0], fetch, name="hit")
    assert await first.get() == "token-1"
    assert await first.get() == "token-1"
    other = make_cache(processes[1], Fetcher(error=AssertionError("must not fetch")))
    assert await other.get() == "token-1"

    assert fetch.calls == 1
    assert counter("wecom_gettoken_calls_total", app="hit", outcome="ok") == before + 1
    assert (first.key, first.lock_key) == (KEY, LOCK)  # one hash tag: one cluster slot
    assert await redis.get(KEY) == b"token-1"
    assert (7200 - 300 - 10) * 1000 < await redis.pttl(KEY) <= (7200 - 300) * 1000
    assert await redis.exists(LOCK) == 0


async def test_cold_start_of_200_gets_in_3_processes_makes_one_gettoken_call(
    redis: Redis, processes: list[Redis]
) -> None:
    fetches = [Fetcher(delay=0.05) for _ in processes]
    caches = [make_cache(client, f) for client, f in zip(processes, fetches, strict=True)]

    tokens = await asyncio.gather(*(caches[i % 3].get() for i in range(200)))

    assert sum(f.calls for f in fetches) == 1
    assert set(tokens) == {"token-1"}
    assert await redis.exists(LOCK) == 0


async def test_a_lock_left_by_a_dead_holder_is_taken_over_after_its_ttl(redis: Redis) -> None:
    await redis.set(LOCK, "dead-holder", px=300)
    lock_seen_by_fetch: list[bytes | str | None] = []

    async def fetch() -> tuple[str, int]:
        lock_seen_by_fetch.append(await redis.get(LOCK))
        return "fresh", 7200

    cache = make_cache(redis, fetch, lock_ttl=0.3)
    assert await cache.get() == "fresh"
    assert len(lock_seen_by_fetch) == 1
    assert lock_seen_by_fetch[0] not in (None, b"dead-holder")  # fetched under its own lock


async def test_a_holder_whose_gettoken_fails_lets_a_waiting_replica_take_over(
    processes: list[Redis],
) -> None:
    gate = asyncio.Event()
    failing = Fetcher(gate=gate, error=WeComUnavailableError("gettoken", "boom"))
    working = Fetcher()
    holder = make_cache(processes[0], failing, retry_budget=0)
    waiter = make_cache(processes[1], working)

    holder_get = asyncio.create_task(holder.get())
    await failing.started.wait()  # the holder has the lock and is inside gettoken
    waiter_get = asyncio.create_task(waiter.get())
    gate.set()

    with pytest.raises(WeComUnavailableError):
        await holder_get
    assert await waiter_get == "token-1"
    assert (failing.calls, working.calls) == (1, 1)


async def test_a_slow_but_live_holder_keeps_its_lock_so_nobody_fetches_twice(
    processes: list[Redis],
) -> None:
    slow = Fetcher(delay=0.6)  # three times lock_ttl: the holder must extend its lock
    other = Fetcher()
    holder = make_cache(processes[0], slow, lock_ttl=0.2)
    waiter = make_cache(processes[1], other, lock_ttl=0.2)

    holder_get = asyncio.create_task(holder.get())
    await slow.started.wait()
    assert await waiter.get() == "token-1"
    assert await holder_get == "token-1"
    assert (slow.calls, other.calls) == (1, 0)


async def test_invalidate_deletes_only_the_matching_token(redis: Redis) -> None:
    fetch = Fetcher()
    cache = make_cache(redis, fetch)
    assert await cache.get() == "token-1"
    await redis.set(KEY, "newer-from-another-replica", px=3_000_000)

    await cache.invalidate("token-1")  # our copy failed, but Redis already holds a newer one
    assert await redis.get(KEY) == b"newer-from-another-replica"
    assert await cache.get() == "newer-from-another-replica"

    await cache.invalidate("something-else")  # not ours: our copy stays
    assert await cache.get() == "newer-from-another-replica"
    assert await redis.get(KEY) == b"newer-from-another-replica"

    await cache.invalidate("newer-from-another-replica")
    assert await redis.exists(KEY) == 0
    assert await cache.get() == "token-2"
    assert fetch.calls == 2


async def test_a_token_that_failed_is_not_read_back_from_redis(redis: Redis) -> None:
    # A replica that still writes (or a load racing the invalidation) must not revive it.
    cache = make_cache(redis, Fetcher())
    await cache.invalidate("revoked")
    await redis.set(KEY, "revoked", px=60_000)
    assert await cache.get() == "token-1"


async def test_refresh_ahead_happens_once_while_every_replica_keeps_the_current_token(
    redis: Redis, processes: list[Redis]
) -> None:
    before = counter("wecom_token_refreshes_total", app="ahead", reason="ahead")
    await redis.set(KEY, "current", px=200_000)  # 200 s left: inside refresh_ahead=300
    gate = asyncio.Event()
    fetches = [Fetcher(gate=gate) for _ in processes]
    caches = [
        make_cache(client, f, name="ahead") for client, f in zip(processes, fetches, strict=True)
    ]

    # While one replica is inside gettoken, every caller is served the current token.
    assert await asyncio.gather(*(c.get() for c in caches for _ in range(10))) == ["current"] * 30
    gate.set()
    for cache in caches:
        await cache.drain()

    assert sum(f.calls for f in fetches) == 1
    assert counter("wecom_token_refreshes_total", app="ahead", reason="ahead") == before + 1
    assert await redis.get(KEY) == b"token-1"
    assert await redis.pttl(KEY) > 6000 * 1000
    refresher = next(c for c, f in zip(caches, fetches, strict=True) if f.calls)
    assert await refresher.get() == "token-1"
    # Asking again does not start another refresh: the others' copies are still valid.
    await asyncio.gather(*(c.get() for c in caches))
    for cache in caches:
        await cache.drain()
    assert sum(f.calls for f in fetches) == 1


async def test_without_redis_one_fetch_serves_many_and_the_copy_keeps_serving() -> None:
    clock = FakeClock()
    fetch = Fetcher(delay=0.02)
    client = dead_redis()
    cache = make_cache(client, fetch, clock=clock, sleep=clock.sleep)
    try:
        assert set(await asyncio.gather(*(cache.get() for _ in range(100)))) == {"token-1"}
        clock.now += 6000  # still inside the token's lifetime
        assert await cache.get() == "token-1"
        await cache.invalidate("unrelated")  # must not raise while Redis is down
        assert fetch.calls == 1

        clock.now += 1000  # past expires_in - margin: one fetch again, not one per caller
        assert set(await asyncio.gather(*(cache.get() for _ in range(50)))) == {"token-2"}
        assert fetch.calls == 2
    finally:
        await cache.aclose()
        await client.aclose()


async def test_when_redis_dies_the_in_process_copy_keeps_serving() -> None:
    clock = FakeClock()
    fetch = Fetcher()
    with EmbeddedRedis() as server:
        client = Redis.from_url(server.url, retry=Retry(NoBackoff(), 0))
        cache = make_cache(client, fetch, clock=clock, sleep=clock.sleep)
        try:
            assert await cache.get() == "token-1"
            server.kill()
            clock.now += 3000
            assert await asyncio.gather(*(cache.get() for _ in range(100))) == ["token-1"] * 100
            assert fetch.calls == 1
            clock.now += 4000  # the copy has expired and Redis is still down
            assert set(await asyncio.gather(*(cache.get() for _ in range(100)))) == {"token-2"}
            assert fetch.calls == 2
        finally:
            await cache.aclose()
            await client.aclose()


async def test_gettoken_errors_back_off_instead_of_looping(redis: Redis) -> None:
    clock = FakeClock()
    fetch = Fetcher(error=RetryableAPIError(-1, "system busy"), clock=clock)
    cache = make_cache(
        redis, fetch, clock=clock, sleep=clock.sleep, retry_budget=10, backoff_base=1,
        backoff_cap=60,
    )  # fmt: skip
    start = clock.now
    longest_wait = 0.0
    while clock.now - start < 300:  # five simulated minutes of a message every half second
        before = clock.now
        with pytest.raises(WeComAPIError):
            await cache.get()
        longest_wait = max(longest_wait, clock.now - before)
        clock.now += 0.5

    # Delays are at least half of 1, 2, 4, … 60 s: 300 s leave room for 15 attempts at most.
    assert 5 <= fetch.calls <= 15
    gaps = [b - a for a, b in zip(fetch.called_at, fetch.called_at[1:], strict=False)]
    assert all(gap >= 0.5 for gap in gaps)
    assert gaps[-1] >= 30  # grown to the cap, not stuck at the start
    assert longest_wait <= 10  # each caller gives up within the retry budget
    assert await redis.exists(LOCK) == 0


async def test_a_permanent_gettoken_error_is_not_retried_and_fails_fast_after(
    redis: Redis,
) -> None:
    clock = FakeClock()
    fetch = Fetcher(error=PermanentAPIError(40001, "invalid credential", endpoint="gettoken"))
    cache = make_cache(redis, fetch, clock=clock, sleep=clock.sleep)

    with pytest.raises(PermanentAPIError):
        await cache.get()
    with pytest.raises(PermanentAPIError):  # inside the backoff window: no new call
        await cache.get()
    assert fetch.calls == 1
    clock.now += 5
    with pytest.raises(PermanentAPIError):
        await cache.get()
    assert fetch.calls == 2


async def test_a_45009_on_gettoken_waits_at_least_a_minute(redis: Redis) -> None:
    clock = FakeClock()
    fetch = Fetcher(error=RateLimitedError(45009, "api freq out of limit"), clock=clock)
    cache = make_cache(redis, fetch, clock=clock, sleep=clock.sleep)
    with pytest.raises(RateLimitedError):
        await cache.get()
    clock.now += 59
    with pytest.raises(RateLimitedError):
        await cache.get()
    assert fetch.calls == 1
