"""Conversation memory on a real Redis: bounds, TTL, reset, isolation, redelivery."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from shared.bus import names
from shared.bus.memory import Memory, Turn

PREFIX = "test"


def turn(n: int, user: str = "", answer: str = "") -> Turn:
    return Turn(id=f"{n}-0", user=user or f"q{n}", assistant=answer or f"a{n}")


async def stored_bytes(redis: Redis, key: str) -> int:
    stored: list[bytes] = await redis.lrange(key, 0, -1)  # type: ignore[assignment]
    return sum(len(item) for item in stored)


async def test_keeps_turns_in_order_under_the_registry_key(redis: Redis) -> None:
    memory = Memory(redis, "assistant", prefix=PREFIX)
    for n in range(3):
        assert await memory.append("default", "alice", turn(n))
    history = await memory.history("default", "alice")
    assert [(t.id, t.user, t.assistant) for t in history] == [
        ("0-0", "q0", "a0"),
        ("1-0", "q1", "a1"),
        ("2-0", "q2", "a2"),
    ]
    assert all(t.at > 0 for t in history)
    key = names.conversation(PREFIX, "default", "assistant", "alice")
    assert await redis.keys("*") == [key.encode()]


async def test_a_redelivered_turn_is_stored_once_and_left_out_on_request(redis: Redis) -> None:
    memory = Memory(redis, "assistant", prefix=PREFIX)
    await memory.append("default", "alice", turn(1))
    again = await asyncio.gather(*(memory.append("default", "alice", turn(2)) for _ in range(5)))
    assert sorted(again) == [False, False, False, False, True]
    assert not await memory.append("default", "alice", turn(2, answer="a different answer"))
    history = await memory.history("default", "alice")
    assert [(t.id, t.assistant) for t in history] == [("1-0", "a1"), ("2-0", "a2")]
    assert [t.id for t in await memory.history("default", "alice", exclude="2-0")] == ["1-0"]


async def test_bounded_by_turns(redis: Redis) -> None:
    memory = Memory(redis, "assistant", prefix=PREFIX, max_turns=3)
    for n in range(7):
        await memory.append("default", "alice", turn(n))
    assert [t.id for t in await memory.history("default", "alice")] == ["4-0", "5-0", "6-0"]


async def test_bounded_by_bytes_keeping_the_newest(redis: Redis) -> None:
    memory = Memory(redis, "assistant", prefix=PREFIX, max_turns=100, max_bytes=2_000)
    for n in range(10):
        await memory.append("default", "alice", turn(n, answer="好" * 100))  # ~ 400 bytes each
    key = names.conversation(PREFIX, "default", "assistant", "alice")
    assert await stored_bytes(redis, key) <= 2_000
    ids = [t.id for t in await memory.history("default", "alice")]
    assert ids == [f"{n}-0" for n in range(10 - len(ids), 10)] and len(ids) >= 3
    # One turn bigger than the whole budget is cut to fit, on a character boundary.
    await memory.append("default", "alice", turn(99, answer="长" * 5_000))
    *_, last = await memory.history("default", "alice")
    assert last.id == "99-0" and 0 < len(last.assistant.encode()) <= 1_000
    assert await stored_bytes(redis, key) <= 2_000
    assert set(last.assistant) == {"长"}


async def test_expires_after_the_ttl_renewed_by_each_turn(redis: Redis) -> None:
    memory = Memory(redis, "assistant", prefix=PREFIX, ttl=600)
    await memory.append("default", "alice", turn(1))
    key = memory.key("default", "alice")
    await redis.expire(key, 5)
    await memory.append("default", "alice", turn(2))
    assert 590 <= await redis.ttl(key) <= 600


async def test_clear_forgets_only_that_conversation(redis: Redis) -> None:
    memory = Memory(redis, "assistant", prefix=PREFIX)
    await memory.append("default", "alice", turn(1, "我的名字是小明"))
    await memory.append("default", "bob", turn(2, "我的名字是小红"))
    assert await memory.clear("default", "alice")
    assert not await memory.clear("default", "alice")
    assert await memory.history("default", "alice") == []
    assert [t.user for t in await memory.history("default", "bob")] == ["我的名字是小红"]


async def test_members_apps_and_behaviours_never_share(redis: Redis) -> None:
    assistant, other = Memory(redis, "assistant", prefix=PREFIX), Memory(redis, "helper")
    await assistant.append("default", "alice", turn(1, "secret of alice"))
    assert await assistant.history("default", "bob") == []
    assert await assistant.history("hr", "alice") == []
    assert await other.history("default", "alice") == []
    # A member id that looks like another key's tail does not reach it either.
    assert await assistant.history("default", "alice:x") == []
    keys = {
        names.conversation(PREFIX, app, behaviour, user)
        for app in ("default", "hr")
        for behaviour in ("assistant", "helper")
        for user in ("alice", "bob")
    }
    assert len(keys) == 8


@pytest.mark.parametrize(
    ("behaviour", "app", "user"),
    [("", "default", "a"), ("a:b", "default", "a"), ("x", "{x}", "a"), ("x", "default", "")],
)
def test_bad_key_parts_are_refused(behaviour: str, app: str, user: str) -> None:
    with pytest.raises(ValueError):
        names.conversation(PREFIX, app, behaviour, user)


async def test_bad_settings_and_ids_are_refused(redis: Redis) -> None:
    with pytest.raises(ValueError):
        Memory(redis, "assistant", max_turns=0)
    with pytest.raises(ValueError):
        Memory(redis, "bad:name")
    memory = Memory(redis, "assistant", prefix=PREFIX)
    with pytest.raises(ValueError):
        await memory.append("default", "alice", Turn(id="1\n2", user="u", assistant="a"))


async def test_unreadable_items_are_skipped(redis: Redis) -> None:
    memory = Memory(redis, "assistant", prefix=PREFIX)
    await redis.rpush(memory.key("default", "alice"), b"0-1\nnot json")
    await memory.append("default", "alice", turn(1))
    assert [t.id for t in await memory.history("default", "alice")] == ["1-0"]
