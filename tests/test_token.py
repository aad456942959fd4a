"""TokenCache on a real Redis: one gettoken per token lifetime across replicas, and failure modes.

Separate Redis clients stand in for separate sender processes; gettoken is the real
WeComClient.gettoken against the project's fake WeCom in-process (``fake_wecom``), with failures
injected through the fake's fault API. The fake hands out the same token until it expires or is
revoked, as WeCom documents.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    WeComClient,
)
from shared.wecom import token as token_module
from tests.inprocess_wecom import InProcessWeCom

KEY = "wecom:token:{wwcorp:1000002}"
LOCK = "wecom:token-lock:{wwcorp:1000002}"


class _NoTokens:
    async def get(self) -> str:
        raise AssertionError("gettoken needs no token")

    async def invalidate(self, failed: str) -> None:
        raise AssertionError("gettoken needs no token")


class Fetcher:
    """WeComClient.gettoken on the fake, counted; ``gate`` and ``delay`` hold a call open to
    widen a race window (nothing is timed)."""

    def __init__(
        self,
        fake: InProcessWeCom,
        *,
        delay: float = 0.0,
        gate: asyncio.Event | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.client = WeComClient(
            fake.settings,
            token_source=_NoTokens(),
            base_url=fake.base_url,
            transport=fake.transport,
        )
        self.calls = 0
        self.tokens: list[str] = []  # what each successful call returned
        self.delay = delay
        self.gate = gate
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
        token, expires_in = await self.client.gettoken()
        self.tokens.append(token)
        return token, expires_in


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
async def fetcher(fake_wecom: InProcessWeCom) -> AsyncIterator[Callable[..., Fetcher]]:
    """Makes Fetchers (on ``fake_wecom`` unless given another fake) and closes their clients."""
    made: list[Fetcher] = []

    def make(fake: InProcessWeCom | None = None, **kw: Any) -> Fetcher:
        made.append(Fetcher(fake or fake_wecom, **kw))
        return made[-1]

    yield make
    for fetch in made:
        await fetch.client.aclose()


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
    redis: Redis,
    processes: list[Redis],
    fetcher: Callable[..., Fetcher],
    fake_wecom: InProcessWeCom,
) -> None:
    before = counter("wecom_gettoken_calls_total", app="hit", outcome="ok")
    fetch = fetcher()
    first = make_cache(processes[0], fetch, name="hit")
    token = await first.get()
    assert token == fake_wecom.state.current["default"].value
    assert await first.get() == token
    idle = fetcher()
    other = make_cache(processes[1], idle)
    assert await other.get() == token

    assert (fetch.calls, idle.calls, fake_wecom.gettoken_calls) == (1, 0, 1)
    assert counter("wecom_gettoken_calls_total", app="hit", outcome="ok") == before + 1
    assert (first.key, first.lock_key) == (KEY, LOCK)  # one hash tag: one cluster slot
    assert await redis.get(KEY) == token.encode()
    assert (7200 - 300 - 10) * 1000 < await redis.pttl(KEY) <= (7200 - 300) * 1000
    assert await redis.exists(LOCK) == 0


async def test_cold_start_of_200_gets_in_3_processes_makes_one_gettoken_call(
    redis: Redis,
    processes: list[Redis],
    fetcher: Callable[..., Fetcher],
    fake_wecom: InProcessWeCom,
) -> None:
    fetches = [fetcher(delay=0.05) for _ in processes]
    caches = [make_cache(client, f) for client, f in zip(processes, fetches, strict=True)]

    tokens = await asyncio.gather(*(caches[i % 3].get() for i in range(200)))

    assert sum(f.calls for f in fetches) == 1 and fake_wecom.gettoken_calls == 1
    assert set(tokens) == {next(t for f in fetches for t in f.tokens)}
    assert await redis.exists(LOCK) == 0


async def test_a_lock_left_by_a_dead_holder_is_taken_over_after_its_ttl(
    redis: Redis, fetcher: Callable[..., Fetcher]
) -> None:
    await redis.set(LOCK, "dead-holder", px=300)
    lock_seen_by_fetch: list[bytes | str | None] = []
    gettoken = fetcher()

    async def fetch() -> tuple[str, int]:
        lock_seen_by_fetch.append(await redis.get(LOCK))
        return await gettoken()

    cache = make_cache(redis, fetch, lock_ttl=0.3)
    assert await cache.get() == gettoken.tokens[0]
    assert len(lock_seen_by_fetch) == 1
    assert lock_seen_by_fetch[0] not in (None, b"dead-holder")  # fetched under its own lock


async def test_a_holder_whose_gettoken_fails_lets_a_waiting_replica_take_over(
    processes: list[Redis], fetcher: Callable[..., Fetcher], fake_wecom: InProcessWeCom
) -> None:
    await fake_wecom.fault(errcode=-1, path="gettoken")  # the holder's call: system busy
    gate = asyncio.Event()
    failing = fetcher(gate=gate)
    working = fetcher()
    holder = make_cache(processes[0], failing, retry_budget=0)
    waiter = make_cache(processes[1], working)

    holder_get = asyncio.create_task(holder.get())
    await failing.started.wait()  # the holder has the lock and is inside gettoken
    waiter_get = asyncio.create_task(waiter.get())
    gate.set()

    with pytest.raises(RetryableAPIError):
        await holder_get
    assert await waiter_get == working.tokens[0]
    assert (failing.calls, working.calls) == (1, 1)
    assert fake_wecom.state.faults_applied == 1


async def test_a_slow_but_live_holder_keeps_its_lock_so_nobody_fetches_twice(
    processes: list[Redis], fetcher: Callable[..., Fetcher]
) -> None:
    slow = fetcher(delay=0.6)  # three times lock_ttl: the holder must extend its lock
    other = fetcher()
    holder = make_cache(processes[0], slow, lock_ttl=0.2)
    waiter = make_cache(processes[1], other, lock_ttl=0.2)

    holder_get = asyncio.create_task(holder.get())
    await slow.started.wait()
    token = await waiter.get()
    assert await holder_get == token == slow.tokens[0]
    assert (slow.calls, other.calls) == (1, 0)


async def test_invalidate_deletes_only_the_matching_token(
    redis: Redis, fetcher: Callable[..., Fetcher], fake_wecom: InProcessWeCom
) -> None:
    fetch = fetcher()
    cache = make_cache(redis, fetch)
    first = await cache.get()
    await redis.set(KEY, "newer-from-another-replica", px=3_000_000)

    await cache.invalidate(first)  # our copy failed, but Redis already holds a newer one
    assert await redis.get(KEY) == b"newer-from-another-replica"
    assert await cache.get() == "newer-from-another-replica"

    await cache.invalidate("something-else")  # not ours: our copy stays
    assert await cache.get() == "newer-from-another-replica"
    assert await redis.get(KEY) == b"newer-from-another-replica"

    await fake_wecom.fault(revoke_tokens=True)  # WeCom ended every token handed out so far
    await cache.invalidate("newer-from-another-replica")
    assert await redis.exists(KEY) == 0
    fresh = await cache.get()
    assert fresh == fetch.tokens[1] != first
    assert fetch.calls == 2


async def test_a_token_that_failed_is_not_read_back_from_redis(
    redis: Redis, fetcher: Callable[..., Fetcher]
) -> None:
    # A replica that still writes (or a load racing the invalidation) must not revive it.
    fetch = fetcher()
    cache = make_cache(redis, fetch)
    await cache.invalidate("revoked")
    await redis.set(KEY, "revoked", px=60_000)
    assert await cache.get() == fetch.tokens[0] != "revoked"


async def test_refresh_ahead_happens_once_while_every_replica_keeps_the_current_token(
    redis: Redis, processes: list[Redis], fetcher: Callable[..., Fetcher]
) -> None:
    before = counter("wecom_token_refreshes_total", app="ahead", reason="ahead")
    await redis.set(KEY, "current", px=200_000)  # 200 s left: inside refresh_ahead=300
    gate = asyncio.Event()
    fetches = [fetcher(gate=gate) for _ in processes]
    caches = [
        make_cache(client, f, name="ahead") for client, f in zip(processes, fetches, strict=True)
    ]

    # While one replica is inside gettoken, every caller is served the current token.
    assert await asyncio.gather(*(c.get() for c in caches for _ in range(10))) == ["current"] * 30
    gate.set()
    for cache in caches:
        await cache.drain()

    assert sum(f.calls for f in fetches) == 1
    (fresh,) = [t for f in fetches for t in f.tokens]
    assert counter("wecom_token_refreshes_total", app="ahead", reason="ahead") == before + 1
    assert await redis.get(KEY) == fresh.encode()
    assert await redis.pttl(KEY) > 6000 * 1000
    refresher = next(c for c, f in zip(caches, fetches, strict=True) if f.calls)
    assert await refresher.get() == fresh
    # Asking again does not start another refresh: the others' copies are still valid.
    await asyncio.gather(*(c.get() for c in caches))
    for cache in caches:
        await cache.drain()
    assert sum(f.calls for f in fetches) == 1


async def test_without_redis_one_fetch_serves_many_and_the_copy_keeps_serving(
    fetcher: Callable[..., Fetcher],
) -> None:
    clock = FakeClock()
    fetch = fetcher(InProcessWeCom(clock=clock), delay=0.02)
    client = dead_redis()
    cache = make_cache(client, fetch, clock=clock, sleep=clock.sleep)
    try:
        assert set(await asyncio.gather(*(cache.get() for _ in range(100)))) == {fetch.tokens[0]}
        clock.now += 6000  # still inside the token's lifetime
        assert await cache.get() == fetch.tokens[0]
        await cache.invalidate("unrelated")  # must not raise while Redis is down
        assert fetch.calls == 1

        # Past the token's lifetime (WeCom now hands out a new one): one fetch again, not one
        # per caller.
        clock.now += 1300
        assert set(await asyncio.gather(*(cache.get() for _ in range(50)))) == {fetch.tokens[1]}
        assert fetch.calls == 2 and fetch.tokens[1] != fetch.tokens[0]
    finally:
        await cache.aclose()
        await client.aclose()


async def test_when_redis_dies_the_in_process_copy_keeps_serving(
    fetcher: Callable[..., Fetcher],
) -> None:
    clock = FakeClock()
    fetch = fetcher(InProcessWeCom(clock=clock))
    with EmbeddedRedis() as server:
        client = Redis.from_url(server.url, retry=Retry(NoBackoff(), 0))
        cache = make_cache(client, fetch, clock=clock, sleep=clock.sleep)
        try:
            token = await cache.get()
            server.kill()
            clock.now += 3000
            assert await asyncio.gather(*(cache.get() for _ in range(100))) == [token] * 100
            assert fetch.calls == 1
            clock.now += 4300  # the token has expired and Redis is still down
            fresh = set(await asyncio.gather(*(cache.get() for _ in range(100))))
            assert fresh == {fetch.tokens[1]} and fetch.tokens[1] != token
            assert fetch.calls == 2
        finally:
            await cache.aclose()
            await client.aclose()


async def test_gettoken_errors_back_off_instead_of_looping(
    redis: Redis, fetcher: Callable[..., Fetcher], fake_wecom: InProcessWeCom
) -> None:
    await fake_wecom.fault(errcode=-1, count=1000, path="gettoken")  # system busy, throughout
    clock = FakeClock()
    fetch = fetcher(clock=clock)
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
    assert fake_wecom.state.faults_applied == fetch.calls  # each one reached the fake
    gaps = [b - a for a, b in zip(fetch.called_at, fetch.called_at[1:], strict=False)]
    assert all(gap >= 0.5 for gap in gaps)
    assert gaps[-1] >= 30  # grown to the cap, not stuck at the start
    assert longest_wait <= 10  # each caller gives up within the retry budget
    assert await redis.exists(LOCK) == 0


async def test_a_permanent_gettoken_error_is_not_retried_and_fails_fast_after(
    redis: Redis, fetcher: Callable[..., Fetcher], fake_wecom: InProcessWeCom
) -> None:
    await fake_wecom.fault(errcode=40001, count=10, path="gettoken")  # invalid credential
    clock = FakeClock()
    fetch = fetcher()
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


async def test_a_45009_on_gettoken_waits_at_least_a_minute(
    redis: Redis, fetcher: Callable[..., Fetcher], fake_wecom: InProcessWeCom
) -> None:
    await fake_wecom.fault(errcode=45009, count=10, path="gettoken")
    clock = FakeClock()
    fetch = fetcher(clock=clock)
    cache = make_cache(redis, fetch, clock=clock, sleep=clock.sleep)
    with pytest.raises(RateLimitedError):
        await cache.get()
    clock.now += 59
    with pytest.raises(RateLimitedError):
        await cache.get()
    assert fetch.calls == 1


async def test_the_lock_keeper_stops_even_when_its_cancel_is_lost(
    redis: Redis, fetcher: Callable[..., Fetcher], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Python 3.11 a cancel landing as redis-py's command finishes can be lost (its
    wait_for): the keeper's extend then returns as usual, and the fetch that cancelled it must
    still end instead of waiting on a keeper that extends the lock forever."""
    parked, lost = asyncio.Event(), asyncio.Event()
    extend = token_module._EXTEND

    async def lossy(client: Redis, keys: Any, args: Any) -> Any:
        if not lost.is_set():  # the first extend: parked until cancelled, the cancel lost
            parked.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
            lost.set()
        return await extend(client, keys, args)

    monkeypatch.setattr(token_module, "_EXTEND", lossy)
    cache = make_cache(redis, fetcher(gate=parked), lock_ttl=0.3)
    async with asyncio.timeout(10):
        token = await cache.get()
    assert lost.is_set() and token
