"""The send governor against a real Redis, with an injected clock (no sleeping)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from shared.wecom.governor import WECOM_TZ, Governor, counted_members

T0 = 1_700_000_000.0  # 2023-11-15 06:13:20 Beijing time


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def delays(app: str) -> float:
    return REGISTRY.get_sample_value("wecom_sender_governor_delays_total", {"app": app}) or 0.0


async def test_forty_sends_in_a_minute_admit_thirty_and_wait_for_the_first_to_age(
    redis: Redis,
) -> None:
    clock = Clock()
    gov = Governor(redis, clock=clock)
    before = delays("a40")
    results = []
    for i in range(40):
        clock.now = T0 + i
        results.append(await gov.acquire("a40", ["alice"], f"r{i}"))
    assert results[:30] == [0.0] * 30
    # every refused one waits until the first send (at T0) is 60 s old
    assert results[30:] == [T0 + 60 - (T0 + i) for i in range(30, 40)]
    assert delays("a40") - before == 10

    clock.now = T0 + 60
    assert await gov.acquire("a40", ["alice"], "later") == 0.0
    assert await gov.acquire("a40", ["alice"], "later2") == 1.0  # the T0+1 send leaves next


async def test_hour_limit_binds_when_the_minute_window_never_does(redis: Redis) -> None:
    clock = Clock()
    gov = Governor(redis, clock=clock)
    # one send every 2 s: exactly 30 per minute, 1000 sends in 2000 s
    for i in range(1000):
        clock.now = T0 + 2 * i
        assert await gov.acquire("hour", ["bob"], f"r{i}") == 0.0
    clock.now = T0 + 2000
    assert await gov.acquire("hour", ["bob"], "r1000") == 3600 - 2000
    clock.now = T0 + 3599.999
    assert await gov.acquire("hour", ["bob"], "r1000") == 0.001
    clock.now = T0 + 3600
    assert await gov.acquire("hour", ["bob"], "r1000") == 0.0


async def test_all_or_nothing_for_several_members(redis: Redis) -> None:
    clock = Clock()
    gov = Governor(redis, clock=clock)
    for i in range(30):
        assert await gov.acquire("app", ["full"], f"f{i}") == 0.0
    clock.now = T0 + 10
    assert await gov.acquire("app", ["u1", "full", "u2"], "multi") == 50.0
    # nothing was recorded for u1 or u2: each still has all 30 slots
    for user in ("u1", "u2"):
        for i in range(30):
            assert await gov.acquire("app", [user], f"{user}-{i}") == 0.0
        assert await gov.acquire("app", [user], f"{user}-extra") > 0
    # a message to several members counts for each of them
    assert await gov.acquire("app", ["x", "y"], "xy") == 0.0
    for user in ("x", "y"):
        for i in range(29):
            assert await gov.acquire("app", [user], f"{user}-{i}") == 0.0
        assert await gov.acquire("app", [user], f"{user}-extra") > 0


async def test_members_are_case_insensitive_and_counted_once_per_message(redis: Redis) -> None:
    gov = Governor(redis, per_minute=2, clock=Clock())
    assert await gov.acquire("app", ["Alice", "alice", " ALICE "], "r1") == 0.0
    assert await gov.acquire("app", "alice|bob", "r2") == 0.0
    assert await gov.acquire("app", ["aLiCe"], "r3") > 0
    assert await gov.acquire("app", ["bob"], "r4") == 0.0


async def test_daily_quota_waits_until_beijing_midnight(redis: Redis) -> None:
    late = datetime(2024, 1, 1, 23, 0, tzinfo=WECOM_TZ).timestamp()
    clock = Clock(late)
    gov = Governor(redis, daily_quota=5, clock=clock)
    assert await gov.acquire("q", ["a", "b"], "r1") == 0.0
    assert await gov.acquire("q", ["c", "d"], "r2") == 0.0
    assert await gov.acquire("q", ["e", "f"], "r3") == 3600.0  # 6 > 5
    assert await gov.acquire("q", ["e"], "r4") == 0.0  # exactly 5
    assert await gov.used_today("q") == 5
    assert await gov.acquire("q", ["g"], "r5") == 3600.0
    assert await gov.acquire("other", ["g"], "r5") == 0.0  # the quota is per app

    clock.now = datetime(2024, 1, 2, 0, 0, tzinfo=WECOM_TZ).timestamp()
    assert await gov.used_today("q") == 0
    assert await gov.acquire("q", ["e", "f"], "r3") == 0.0
    assert await redis.get("wecom:rate:{q}:day:20240101") == b"5"
    assert await redis.get("wecom:rate:{q}:day:20240102") == b"2"


async def test_same_request_id_counts_once(redis: Redis) -> None:
    clock = Clock()
    gov = Governor(redis, daily_quota=100, clock=clock)
    assert await gov.acquire("app", ["carol"], "dup") == 0.0
    clock.now += 1
    assert await gov.acquire("app", ["carol"], "dup") == 0.0
    for i in range(29):
        assert await gov.acquire("app", ["carol"], f"r{i}") == 0.0
    assert await gov.acquire("app", ["carol"], "r29") > 0
    # the window is full, yet the already admitted request is still admitted
    assert await gov.acquire("app", ["carol"], "dup") == 0.0
    assert await gov.used_today("app") == 30


async def test_release_frees_the_slot_and_the_quota(redis: Redis) -> None:
    clock = Clock()
    gov = Governor(redis, daily_quota=30, clock=clock)
    for i in range(30):
        assert await gov.acquire("app", ["dave"], f"r{i}") == 0.0
    assert await gov.acquire("app", ["dave"], "r30") > 0
    assert await gov.release("app", ["dave"], "r7") == 1
    assert await gov.release("app", ["dave"], "r7") == 0
    assert await gov.used_today("app") == 29
    assert await gov.acquire("app", ["dave"], "r30") == 0.0
    assert await gov.acquire("app", ["dave"], "r31") > 0


async def test_three_replicas_racing_admit_exactly_thirty(redis_url: str) -> None:
    clients = [Redis.from_url(redis_url) for _ in range(3)]
    try:
        await clients[0].flushdb()
        govs = [Governor(c, clock=Clock()) for c in clients]
        results = await asyncio.gather(
            *(govs[i % 3].acquire("race", ["erin"], f"r{i}") for i in range(100))
        )
    finally:
        for c in clients:
            await c.aclose()
    assert results.count(0.0) == 30
    assert all(r == 60.0 for r in results if r)


async def test_at_all_is_one_pseudo_member(redis: Redis) -> None:
    assert counted_members("@all") == ["@all"]
    assert counted_members("u1|@all|u2") == ["@all"]
    assert counted_members("U1||u1| u2 ") == ["u1", "u2"]
    assert counted_members(None) == []
    gov = Governor(redis, clock=Clock())
    for i in range(30):
        assert await gov.acquire("app", ["@all"], f"b{i}") == 0.0
    assert await gov.acquire("app", counted_members("@all|frank"), "b30") == 60.0
    assert await gov.acquire("app", ["frank"], "f1") == 0.0
    assert await gov.acquire("app", [], "party-only") == 0.0  # toparty/totag: nothing counted


async def test_keys_expire_a_little_after_an_hour(redis: Redis) -> None:
    gov = Governor(redis, clock=Clock())
    await gov.acquire("app", ["Gina"], "r1")
    ttl = await redis.pttl("wecom:rate:{app}:user:gina")
    assert 3_600_000 < ttl <= 3_660_000


async def test_margin_widens_the_windows(redis: Redis) -> None:
    gov = Governor(redis, per_minute=1, margin=1.5, clock=Clock())
    assert await gov.acquire("app", ["hank"], "r1") == 0.0
    assert await gov.acquire("app", ["hank"], "r2") == 61.5


# ---- property: a random schedule never puts too many successes in a window -----------------

MINUTE_MS, HOUR_MS = 60_000, 3_600_000
ops = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 3_000), st.integers(0, 400_000)),  # gap before the call, ms
        st.sets(st.sampled_from(["a", "b", "c"]), min_size=1),
    ),
    min_size=1,
    max_size=60,
)


def expected_wait(
    history: dict[str, list[int]], users: set[str], now: int, lim: tuple[int, int]
) -> int:
    """A brute-force model: ms until every user has room in both windows."""
    wait = 0
    for user in users:
        for span, limit in ((MINUTE_MS, lim[0]), (HOUR_MS, lim[1])):
            inside = sorted(t for t in history[user] if t > now - span)
            if len(inside) >= limit:
                wait = max(wait, inside[len(inside) - limit] + span - now)
    return wait


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedule=ops, per_minute=st.integers(1, 4), per_hour=st.integers(4, 12))
def test_no_window_ever_holds_more_than_the_limits(
    redis_url: str, schedule: list[tuple[int, set[str]]], per_minute: int, per_hour: int
) -> None:
    async def run() -> dict[str, list[int]]:
        client = Redis.from_url(redis_url)
        clock = Clock()
        gov = Governor(
            client,
            prefix=f"p{uuid.uuid4().hex}",
            per_minute=per_minute,
            per_hour=per_hour,
            clock=clock,
        )
        history: dict[str, list[int]] = {"a": [], "b": [], "c": []}
        now = 0
        try:
            for n, (gap, users) in enumerate(schedule):
                now += gap
                clock.now = T0 + now / 1000
                wait = await gov.acquire("app", sorted(users), f"r{n}")
                assert round(wait * 1000) == expected_wait(
                    history, users, now, (per_minute, per_hour)
                )
                if wait == 0:
                    for user in users:
                        history[user].append(now)
        finally:
            await client.aclose()
        return history

    history = asyncio.run(run())
    for times in history.values():
        for t in times:
            assert sum(t - MINUTE_MS < s <= t for s in times) <= per_minute
            assert sum(t - HOUR_MS < s <= t for s in times) <= per_hour
