"""Against the fake WeCom: the duplicate-check policy in each mode, and long replies that
arrive whole as ordered parts of at most 2048 bytes."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from services.sender.handler import DuplicateCheck
from shared.bus import names, sendstate
from shared.schemas.envelope import encode_outbox, outbox_entry
from shared.schemas.outbound import MarkdownSend
from tests.sender_kit import AUTH, Kit, sender_kit, text


async def make(redis_url: str, mode: DuplicateCheck) -> AsyncIterator[Kit]:
    async with sender_kit(redis_url, duplicate_check=mode) as kit:
        yield kit


@pytest.fixture(params=["redelivery", "always", "off"])
async def kit(request: pytest.FixtureRequest, redis_url: str, redis: Any) -> AsyncIterator[Kit]:
    async for made in make(redis_url, request.param):
        yield made


def flags(bodies: list[dict[str, Any]]) -> list[int]:
    return [b.get("enable_duplicate_check", 0) for b in bodies]


def delivered_to_alice(kit: Kit) -> int:
    return sum(r.delivered.count("alice") for r in kit.fake.fake.sends)


# --- SENDER_DUPLICATE_CHECK -----------------------------------------------------------------


async def test_a_lost_answer_is_resent_and_suppressed_unless_off(kit: Kit) -> None:
    mode = kit.handler.duplicate_check
    kit.lose_answer()
    await kit.put(text("alice", "your ticket is #42"))
    await kit.drain()
    attempts = [r.body for r in kit.fake.fake.sends]
    assert len(attempts) == 2  # the one whose answer was lost, and the resend
    assert flags(attempts) == {"redelivery": [0, 1], "always": [1, 1], "off": [0, 0]}[mode]
    # off: WeCom is not asked to drop the copy, and the member sees the reply twice
    assert delivered_to_alice(kit) == (2 if mode == "off" else 1)


async def test_the_redelivery_flag_survives_the_delayed_queue(kit: Kit) -> None:
    mode = kit.handler.duplicate_check
    kit.fault(45009)  # refused: the app pauses, the request waits in the delayed queue
    request_id = await kit.put(text("alice", "hello"))
    await kit.consumer.run_burst()
    assert await kit.redis.zscore(names.delayed(), request_id) is not None
    await kit.drain()  # it comes back as a new outbox entry (first delivery of that entry)
    attempts = [r.body for r in kit.fake.fake.sends]
    assert flags(attempts) == {"redelivery": [0, 1], "always": [1, 1], "off": [0, 0]}[mode]
    assert delivered_to_alice(kit) == 1


async def test_a_repeated_identical_reply_is_suppressed_only_when_always(kit: Kit) -> None:
    mode = kit.handler.duplicate_check
    await kit.put(text("alice", "好的"))
    await kit.drain()
    await kit.put(text("alice", "好的"))  # a second, distinct request with the same body
    await kit.drain()
    # always: WeCom drops the member's legitimately repeated reply within the interval
    assert delivered_to_alice(kit) == (1 if mode == "always" else 2)


# --- long replies ---------------------------------------------------------------------------

PARAGRAPH = "这是一段很长的回答，包含中文、English words, emoji 😀🎉 和换行。\n"


def long_reply(size: int) -> str:
    """CJK, ASCII, 4-byte emoji and newlines, at least ``size`` bytes."""
    body = ""
    i = 0
    while len(body.encode()) < size:
        body += f"{i}. {PARAGRAPH}" + ("\n" if i % 3 == 2 else "")
        i += 1
    return body


@pytest.fixture
async def one(redis_url: str, redis: Any) -> AsyncIterator[Kit]:
    async for made in make(redis_url, "redelivery"):
        yield made


def parts_of(kit: Kit, key: str = "text") -> list[str]:
    return [b[key]["content"] for b in kit.sends()]


@pytest.mark.parametrize("size", [4000, 6000])
async def test_a_long_reply_arrives_whole_in_ordered_parts(one: Kit, size: int) -> None:
    reply = long_reply(size)
    request_id = (
        await one.api.post("/v1/messages", json=text("alice", reply), headers=AUTH)
    ).json()["id"]
    await one.drain()
    parts = parts_of(one)
    assert len(parts) >= -(-len(reply.encode()) // 2048)
    assert all(len(p.encode()) <= 2048 for p in parts)
    assert "".join(parts) == reply
    state = await sendstate.read(one.redis, "wecom", request_id)
    assert state is not None and state.status == "sent"
    assert state.msgids == [r.msgid for r in one.fake.fake.sends]


async def test_a_handlers_long_markdown_reply_is_split_too(one: Kit) -> None:
    reply = long_reply(5000)
    request = MarkdownSend.to("alice", reply)  # what a handler returns; validated, not refused
    entry = outbox_entry(
        id="handler-1",
        app="default",
        trace_id=uuid.uuid4().hex[:16],
        created_at=time.time(),
        request=request,
        origin="handler:test",
    )
    await one.redis.xadd(names.outbox(), {"data": encode_outbox(entry)})
    await one.drain()
    parts = parts_of(one, "markdown")
    assert len(parts) >= 3 and "".join(parts) == reply
    assert all(len(p.encode()) <= 2048 for p in parts)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_a_part_that_must_wait_resumes_without_resending_earlier_ones(
    redis_url: str, redis: Any
) -> None:
    clock = Clock()
    async with sender_kit(redis_url, clock=clock) as kit:
        for i in range(29):  # alice has room for one more message this minute
            await kit.put(text("alice", f"short {i}"))
        await kit.drain()
        reply = long_reply(5000)
        await kit.put(text("alice", reply))
        await kit.consumer.run_burst()
        first = parts_of(kit)[29:]
        assert len(first) == 1 and reply.startswith(first[0])  # part 1 left, part 2 waits
        clock.now += 61
        await kit.drain()
        parts = parts_of(kit)[29:]
        assert "".join(parts) == reply  # in order, each part once
        assert len(parts) == len(set(parts)) >= 3


async def test_a_replayed_entry_sends_no_part_again(one: Kit) -> None:
    reply = long_reply(4000)
    await one.put(text("alice", reply))
    await one.drain()
    sent = len(one.fake.fake.sends)
    [(_, fields)] = cast(
        "list[tuple[bytes, dict[bytes, bytes]]]", await one.redis.xrange(names.outbox())
    )
    await one.redis.xadd(names.outbox(), {"data": fields[b"data"]})  # an operator's replay
    await one.drain()
    assert len(one.fake.fake.sends) == sent


async def test_a_miniprogram_notice_reaches_wecom_without_agentid(one: Kit) -> None:
    notice = {"appid": "wx123", "page": "pages/index", "title": "会议室预订成功"}
    await one.put(
        {"touser": "alice", "msgtype": "miniprogram_notice", "miniprogram_notice": notice}
    )
    await one.drain()
    [body] = one.sends()
    assert "agentid" not in body
    assert body["miniprogram_notice"] == notice
