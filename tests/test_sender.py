"""The sender on a real Redis against the fake WeCom (in-process): once per request, one
gettoken for many replicas, transient errors retried, refused messages dead-lettered with
advice, members kept under WeCom's rate limits."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from shared.bus import delayed, names, sendstate
from tests import helpers
from tests.sender_kit import Kit, sender_kit, text


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def kit(redis_url: str, redis: Redis, clock: Clock) -> AsyncIterator[Kit]:
    async with sender_kit(redis_url, clock=clock) as made:
        yield made


def contents(kit: Kit, *statuses: str) -> list[str]:
    return sorted(b["text"]["content"] for b in kit.sends(*statuses))


async def outbox_entries(redis: Redis) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return cast("list[tuple[bytes, dict[bytes, bytes]]]", await redis.xrange(names.outbox()))


async def test_a_request_is_sent_once_with_the_apps_agentid(kit: Kit) -> None:
    request_id = await kit.put(text("alice", "hello"))
    await kit.drain()
    assert kit.sends() == [
        {
            "touser": "alice",
            "msgtype": "text",
            "agentid": helpers.AGENT_ID,
            "text": {"content": "hello"},
        }
    ]
    record = json.loads(cast(bytes, await kit.redis.get(names.sent("wecom", request_id))))
    assert record["msgid"] == kit.fake.fake.sends[0].msgid
    # Delivered again (e.g. replayed by an operator): sent:<id> stops a second send.
    [(_, first)] = await outbox_entries(kit.redis)
    await kit.redis.xadd(names.outbox(), {"data": first[b"data"]})
    await kit.drain()
    assert len(kit.fake.fake.sends) == 1


async def test_cold_start_three_replicas_two_hundred_sends_one_gettoken(redis_url: str) -> None:
    members = tuple(f"user{i}" for i in range(200))
    async with sender_kit(redis_url, members=members) as kit:
        for i, member in enumerate(members):
            await kit.put(text(member, f"n{i}"))
        replicas = [kit.consumer, kit.more().consumer, kit.more().consumer]
        await asyncio.gather(*(consumer.run_burst() for consumer in replicas))
        assert kit.fake.fake.gettoken_calls["default"] == 1
        assert contents(kit) == sorted(f"n{i}" for i in range(200))


async def test_token_revoked_mid_run_one_refresh_each_message_once(kit: Kit) -> None:
    for i in range(5):
        await kit.put(text("alice", f"m{i}"))
    await kit.drain()
    assert kit.fake.fake.revoke_tokens() == 1  # WeCom revoked the token early
    for i in range(5, 12):
        await kit.put(text("bob", f"m{i}"))
    await kit.drain()
    assert kit.fake.fake.gettoken_calls["default"] == 2
    assert contents(kit) == sorted(f"m{i}" for i in range(12))


async def test_bursts_of_busy_and_concurrency_errors_are_delivered_later_once(kit: Kit) -> None:
    # 45009 pauses the whole app instead: tests/test_circuit.py
    kit.inject(errcode=-1, count=2)
    kit.inject(errcode=6000)
    kit.inject(errcode=45033)
    kit.inject(timeout=True, seconds=3)  # no answer: the send times out
    kit.inject(reset=True)
    for i in range(10):
        await kit.put(text("alice" if i % 2 else "bob", f"m{i}"))
    await kit.drain()
    assert contents(kit) == sorted(f"m{i}" for i in range(10))
    assert len(kit.sends("faulted")) == 6
    assert await kit.redis.xlen(names.deadletter()) == 0


@pytest.mark.parametrize(
    ("body", "errcode", "advice"),
    [
        (text("nobody-here", "x"), 81013, "visible"),
        ({"touser": "alice", "msgtype": "image", "image": {"media_id": "gone"}}, 40007, "media_id"),
    ],
)
async def test_a_refused_message_goes_to_the_dead_letter_with_advice(
    kit: Kit, body: dict[str, Any], errcode: int, advice: str
) -> None:
    request_id = await kit.put(body)
    await kit.drain()
    assert kit.sends() == []
    assert len(kit.sends("rejected")) == 1  # not retried
    [(_, fields)] = cast(
        "list[tuple[bytes, dict[bytes, bytes]]]", await kit.redis.xrange(names.deadletter())
    )
    error = fields[b"error"].decode()
    assert f"errcode {errcode}" in error
    assert advice.lower() in error.lower()
    assert fields[b"group"] == b"sender"
    state = await sendstate.read(kit.redis, "wecom", request_id)
    assert state is not None and (state.status, state.errcode) == ("dead", errcode)


async def test_an_injected_refusal_is_dead_lettered_too(kit: Kit) -> None:
    kit.fault(45002)  # the message is too large, says WeCom
    await kit.put(text("alice", "x"))
    await kit.drain()
    [(_, fields)] = cast(
        "list[tuple[bytes, dict[bytes, bytes]]]", await kit.redis.xrange(names.deadletter())
    )
    assert "errcode 45002" in fields[b"error"].decode()


async def test_forty_to_one_member_never_more_than_thirty_a_minute(kit: Kit, clock: Clock) -> None:
    for i in range(40):
        await kit.put(text("alice", f"m{i:02}"))
    await kit.consumer.run_burst()
    assert len(kit.sends()) == 30
    assert await delayed.size(kit.redis, "wecom") == 10
    # Not due yet: a scheduler pass moves nothing.
    assert (
        await delayed.move_due(kit.redis, "wecom", target_stream=names.outbox(), now=clock.now) == 0
    )
    clock.now += 61
    await kit.drain()
    assert contents(kit) == [f"m{i:02}" for i in range(40)]
    assert kit.sends("dropped", "partial") == []  # the fake never had to drop one
