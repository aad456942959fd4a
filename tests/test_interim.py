"""Sending while a handler runs: send_now's once-only ids and the interim reply's timer."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from shared.bus import names
from shared.bus.interim import Interim, delivered, early_id, interim, send_now
from shared.bus.router import Context, Router
from shared.bus.testing import read_outbox, run_events, text_message, texts
from shared.schemas.inbound import TextMessage
from shared.schemas.outbound import TextSend

PREFIX = "test"


def context(entry_id: str = "1700000000000-0", delivery: int = 1) -> Context:
    msg = text_message("hi", "alice")
    return Context(
        event=msg,
        app="default",
        entry_id=entry_id,
        stream=names.events(PREFIX),
        trace_id="t1",
        delivery=delivery,
        handler="demo.slow",
    )


def thinking(text: str = "正在思考…") -> TextSend:
    return TextSend.to("alice", text)


async def wait_for_outbox(redis: Redis, count: int) -> None:
    for _ in range(500):
        if await redis.xlen(names.outbox(PREFIX)) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the outbox never reached {count} entries")


async def test_send_now_enqueues_once_per_event_label_and_index(redis: Redis) -> None:
    ctx = context()
    assert await send_now(redis, ctx, thinking("a"), label="part", prefix=PREFIX)
    redelivered = context(delivery=2)
    assert not await send_now(redis, redelivered, thinking("a again"), label="part", prefix=PREFIX)
    assert await send_now(redis, ctx, thinking("b"), label="part", index=1, prefix=PREFIX)
    assert await send_now(
        redis, context("1700000000001-0"), thinking("c"), label="part", prefix=PREFIX
    )
    entries = await read_outbox(redis, prefix=PREFIX)
    assert texts(entries) == ["a", "b", "c"]
    assert entries[0].id == early_id(ctx, "part", 0) != entries[1].id
    assert entries[0].origin == "handler:demo.slow"
    assert (entries[0].app, entries[0].trace_id, entries[0].request.touser) == (
        "default",
        "t1",
        "alice",
    )


async def test_fires_once_when_the_handler_is_slow(redis: Redis) -> None:
    ctx = context()
    async with Interim(redis, ctx, thinking(), after=0.01, prefix=PREFIX) as interim:
        await wait_for_outbox(redis, 1)
    assert interim.sent
    (entry,) = await read_outbox(redis, prefix=PREFIX)
    assert texts([entry]) == ["正在思考…"] and entry.id == early_id(ctx, "interim")
    # The same event delivered again, slow again: nothing more reaches the outbox.
    async with Interim(redis, context(delivery=2), thinking(), after=0.0, prefix=PREFIX) as again:
        await asyncio.sleep(0.05)
    assert again.sent
    assert len(await read_outbox(redis, prefix=PREFIX)) == 1


async def test_silent_when_the_handler_answers_in_time_or_cancels(redis: Redis) -> None:
    async with Interim(redis, context(), thinking(), after=30, prefix=PREFIX) as early:
        pass
    async with Interim(redis, context("2-0"), thinking(), after=0.0, prefix=PREFIX) as cancelled:
        cancelled.cancel()
        await asyncio.sleep(0.05)
    async with Interim(redis, context("3-0"), thinking(), after=None, prefix=PREFIX) as never:
        await asyncio.sleep(0.05)
    assert not (early.sent or cancelled.sent or never.sent)
    assert await redis.xlen(names.outbox(PREFIX)) == 0


async def test_comes_before_the_answer_of_a_real_handler(redis: Redis) -> None:
    router = Router("demo")

    @router.on(TextMessage)
    async def slow(msg: TextMessage, ctx: Context) -> TextSend:
        async with interim(ctx, TextSend.reply_to(msg, "请稍候"), after=0.01):
            await wait_for_outbox(redis, 1)
        return TextSend.reply_to(msg, "答案")

    entries = await run_events(redis, router, [text_message("问题", "bob")], prefix=PREFIX)
    assert texts(entries) == ["请稍候", "答案"]
    assert [e.request.touser for e in entries] == ["bob", "bob"]
    assert entries[0].origin == entries[1].origin
    assert entries[0].origin.startswith("handler:demo.") and entries[0].origin.endswith(".slow")


async def test_delivered_waits_for_the_senders_mark(redis: Redis) -> None:
    rid = early_id(context(), "part", 0)
    assert not await delivered(redis, rid, prefix=PREFIX, patience=0.05, poll=0.01)

    async def sender_marks_it() -> None:
        await asyncio.sleep(0.05)
        await redis.set(names.sent(PREFIX, rid), b"msgid")

    marking = asyncio.create_task(sender_marks_it())
    assert await delivered(redis, rid, prefix=PREFIX, patience=10, poll=0.01)
    await marking
