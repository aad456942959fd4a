"""The sender's gate and record scripts (services.sender.gates, .records) on a real Redis: the
gate stops at the first no without leaving anything to undo, the record is all or nothing, and
both load themselves again after Redis forgot them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from services.sender.gates import Gate, Opened
from services.sender.records import Records
from shared.bus import names, sendstate
from shared.bus.scripts import NotReplicated, TickScripts
from shared.wecom import circuit
from shared.wecom.client import SendResult
from shared.wecom.governor import Governor
from tests.sender_kit import Kit, sender_kit, text

P = "gt"
RID = "req-1"


@pytest.fixture
async def kit(redis_url: str) -> AsyncIterator[Kit]:
    async with sender_kit(redis_url) as made:
        yield made


async def open_gate(redis: Redis, now: float, users: list[str]) -> Opened:
    governor = Governor(redis, prefix=P, clock=lambda: now)
    gate = Gate(redis, TickScripts(redis))
    return await gate(
        names.sent(P, RID),
        (names.status(P, RID), sendstate.attempts_field(1)),
        circuit.admit_call(P, "default", now, lease=30.0),
        governor.acquire_call("default", users, RID),
    )


async def trip(redis: Redis, now: float, wait: float) -> None:
    await circuit.trip(
        redis, P, "default", reason="config", errcode=40001, advice="", probe=False,
        waits=[wait], now=now,
    )  # fmt: skip


async def admitted(redis: Redis, user: str) -> bool:
    return await redis.zscore(names.rate_user(P, "default", user), RID) is not None


async def test_a_clear_gate_admits_and_counts_the_send(redis: Redis) -> None:
    await redis.hset(names.status(P, RID), sendstate.attempts_field(1), 2)
    found = await open_gate(redis, time.time(), ["alice"])
    assert found == Opened(None, 2, 0, 0)
    assert await admitted(redis, "alice")


async def test_a_sent_part_admits_nothing(redis: Redis) -> None:
    await redis.set(names.sent(P, RID), b'{"msgid":"m1","response_code":""}')
    now = time.time()
    await trip(redis, now - 10, 1.0)  # probing: it would take the probe
    found = await open_gate(redis, now, ["alice"])
    assert found.mark is not None and (found.admit, found.acquired) == (0, 0)
    assert not await admitted(redis, "alice")
    assert await redis.hget(names.circuit(P, "default"), "probe") is None


async def test_an_open_circuit_leaves_the_governor_alone(redis: Redis) -> None:
    now = time.time()
    await trip(redis, now, 60.0)
    found = await open_gate(redis, now, ["alice"])
    assert found.mark is None and 59_000 <= found.admit <= 60_000
    assert not await admitted(redis, "alice")


async def test_a_probe_without_room_is_given_back(redis: Redis) -> None:
    now = time.time()
    full = names.rate_user(P, "default", "alice")
    await redis.zadd(full, {f"other-{i}": round(now * 1000) - 1000 for i in range(30)})
    await trip(redis, now - 10, 1.0)  # its wait is over: this send would be the probe
    found = await open_gate(redis, now, ["alice"])
    assert found.admit == 0 and found.acquired > 0
    assert await redis.hget(names.circuit(P, "default"), "probe") is None
    again = await open_gate(redis, now, ["bob"])  # so the next send probes
    assert again.admit == -1 and again.acquired == 0


async def test_the_record_is_all_or_nothing_and_waits_for_replicas(redis: Redis) -> None:
    records = Records(redis, P, TickScripts(redis), wait=(1, 50))  # no replica: too few
    key = names.status(P, RID)
    await redis.hset(key, mapping={"state": "delayed", "until": "1", "reason": "x"})
    with pytest.raises(NotReplicated):
        await records(RID, 1, names.sent(P, RID), SendResult(msgid="m1"), [SendResult(msgid="m1")])
    # the write stands on the primary: the redelivery finds the mark and sends nothing
    assert await redis.get(names.sent(P, RID)) == b'{"msgid":"m1","response_code":""}'
    state = await sendstate.read(redis, P, RID)
    assert state is not None and (state.status, state.msgid) == ("sent", "m1")
    assert await redis.hget(key, "try1") == b"1"
    assert await redis.hget(key, "until") is None
    assert 0 < await redis.ttl(key) <= sendstate.STATUS_TTL


async def test_the_last_part_of_a_split_request_marks_the_request(redis: Redis) -> None:
    records = Records(redis, P, TickScripts(redis))
    first, second = SendResult(msgid="m1"), SendResult(msgid="m2")
    await records(RID, 1, names.sent_part(P, RID, 1), first, None)
    assert await redis.get(names.sent(P, RID)) is None
    assert await sendstate.read(redis, P, RID) is None  # the request is not sent yet
    await records(RID, 2, names.sent_part(P, RID, 2), second, [first, second])
    whole = await redis.get(names.sent(P, RID))
    assert whole == b'{"msgid":"m1","msgids":["m1","m2"],"response_code":""}'
    state = await sendstate.read(redis, P, RID)
    assert state is not None and state.msgids == ["m1", "m2"]
    assert await redis.hmget(names.status(P, RID), "try1", "try2") == [b"1", b"1"]


async def test_sends_go_on_after_redis_forgot_the_scripts(kit: Kit) -> None:
    first = await kit.put(text("alice", "before"))
    await kit.drain()
    await kit.redis.script_flush()
    second = await kit.put(text("alice", "after"))
    await kit.drain()
    assert sorted(b["text"]["content"] for b in kit.sends()) == ["after", "before"]
    for rid in (first, second):
        state = await sendstate.read(kit.redis, kit.settings.prefix, rid)
        assert state is not None and state.status == "sent"
