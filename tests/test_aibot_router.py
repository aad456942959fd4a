"""Behaviours answering AI-bot messages: the ingress stores the message, a real consumer runs
the router over the events stream, WeCom's polls see the stream grow and finish."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from examples.aibot.router import router as echo_router
from services.ingress.app import create_app
from shared.bus import Context, Router, names, partitions, streams
from shared.bus.options import ConsumerOptions
from shared.bus.partitioned import PartitionedConsumer
from shared.bus.router import State
from shared.bus.worker import Consumer
from shared.schemas.aibot import BotText
from tests import helpers
from tests.test_aibot_ingress import EVENTS, bots_file, poll_of, post, sample


@pytest.fixture
async def ingress(redis_url: str, redis: Redis, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = helpers.settings(redis_url, WECOM_BOTS_FILE=bots_file(tmp_path))
    transport = httpx.ASGITransport(app=create_app(settings, redis=redis))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as c:
        yield c


async def consume(redis: Redis, router: Router, **environ: str) -> None:
    """One burst of a fresh consumer group over everything on the events stream."""
    group = f"test-{secrets.token_hex(4)}"
    await streams.ensure_group(redis, EVENTS, group, start="backlog")
    state = State(redis=redis, environ=environ)
    consumer = Consumer(
        redis,
        stream=EVENTS,
        group=group,
        handler=router.handler("wecom", state=state),
        options=ConsumerOptions(
            concurrency=1, prefix="wecom", max_deliveries=1, claim_idle=0.5, handler_timeout=30.0
        ),
    )
    await consumer.run_burst()
    assert await redis.xlen(names.deadletter("wecom")) == 0


async def stream_of(ingress: httpx.AsyncClient, stream_id: str) -> dict[str, Any]:
    reply: dict[str, Any] = (await post(ingress, poll_of(stream_id))).reply["stream"]
    return reply


async def test_echo_behaviour_streams_and_finishes(
    ingress: httpx.AsyncClient, redis: Redis
) -> None:
    text = sample("text_group", text={"content": "@RobotA 你好 streaming world"})
    stream_id = (await post(ingress, text)).reply["stream"]["id"]
    image_stream = (await post(ingress, sample("image"))).reply["stream"]["id"]
    await post(ingress, sample("enter_chat"))  # an event: no stream, nothing written
    await consume(redis, echo_router, AIBOT_ECHO_DELAY="0")
    assert await stream_of(ingress, stream_id) == {
        "id": stream_id,
        "finish": True,
        "content": "你好 streaming world",
    }
    image = await stream_of(ingress, image_stream)
    assert image["finish"] is True and image["content"] == "I can only echo text, not image."


async def test_a_redelivered_event_does_not_repeat_the_text(
    ingress: httpx.AsyncClient, redis: Redis
) -> None:
    stream_id = (await post(ingress, sample("text_group"))).reply["stream"]["id"]
    await consume(redis, echo_router, AIBOT_ECHO_DELAY="0")
    await consume(redis, echo_router, AIBOT_ECHO_DELAY="0")  # the same entry, handled again
    assert (await stream_of(ingress, stream_id))["content"] == "hello robot"


async def test_polls_see_the_answer_grow_while_the_handler_runs(
    ingress: httpx.AsyncClient, redis: Redis
) -> None:
    steps = [asyncio.Event() for _ in range(3)]
    written = [asyncio.Event() for _ in range(3)]
    router = Router("stepper")

    @router.on(BotText)
    async def stepper(msg: BotText, ctx: Context) -> None:
        for i, piece in enumerate(["one", " two", " three"]):
            await steps[i].wait()
            if i < 2:
                await ctx.bot_stream.append(piece)
            else:
                await ctx.bot_stream.finish(piece)
            written[i].set()

    stream_id = (await post(ingress, sample("text_group"))).reply["stream"]["id"]
    running = asyncio.create_task(consume(redis, router))
    seen = [await stream_of(ingress, stream_id)]
    for step, done in zip(steps, written, strict=True):
        step.set()
        await asyncio.wait_for(done.wait(), 10)
        seen.append(await stream_of(ingress, stream_id))
    await asyncio.wait_for(running, 10)
    assert [(s["content"], s["finish"]) for s in seen] == [
        ("", False),
        ("one", False),
        ("one two", False),
        ("one two three", True),
    ]


async def test_bot_stream_is_only_for_bot_messages(redis: Redis) -> None:
    router = Router("misuse")
    errors: list[str] = []

    @router.on(BotText)
    async def never(msg: BotText, ctx: Context) -> None:  # pragma: no cover - must not match
        errors.append("a bot route matched an app event")

    from shared.bus.testing import run_events, text_message

    assert await run_events(redis, router, [text_message("hi")]) == []
    assert errors == []
    with pytest.raises(RuntimeError, match="only for AI-bot messages"):
        _ = Context(event=text_message("hi"), handler="h").bot_stream


async def test_with_partitions_a_bot_answer_lives_in_its_senders_partition(
    redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    settings = helpers.settings(redis_url, WECOM_BOTS_FILE=bots_file(tmp_path), BUS_PARTITIONS="4")
    transport = httpx.ASGITransport(app=create_app(settings, redis=redis))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as ingress:
        ids = {}
        for member in ("alice", "bob", "carol", "dave"):
            message = sample("text_group", msgid=f"m-{member}", **{"from": {"userid": member}})
            message["text"] = {"content": f"@RobotA hi {member}"}
            ids[member] = (await post(ingress, message)).reply["stream"]["id"]
        parts = names.partitions("wecom", 4)
        held = {p: await redis.xlen(names.events(p)) for p in parts}
        assert sum(held.values()) == 4 and len([n for n in held.values() if n]) >= 2
        assert await redis.xlen(EVENTS) == 0  # nothing on the unpartitioned stream
        for member, stream_id in ids.items():
            index = partitions.index("bot:helper", member, 4)
            assert stream_id.endswith(f"p{index}")
            key = names.bot_stream(parts[index], "helper", stream_id)
            assert await redis.exists(key), member
        consumer = PartitionedConsumer(
            redis,
            streams=[names.events(p) for p in parts],
            group="responder",
            handler=echo_router.handler(
                "wecom", state=State(redis=redis, environ={"AIBOT_ECHO_DELAY": "0"})
            ),
            options=ConsumerOptions(prefix="wecom", start="backlog", handler_timeout=30.0),
        )
        await consumer.run_burst()
        for member, stream_id in ids.items():
            assert await stream_of(ingress, stream_id) == {
                "id": stream_id,
                "finish": True,
                "content": f"hi {member}",
            }
        # An id of another layout (no partition, or one out of range) is an unknown stream.
        for odd in (ids["alice"][:32], ids["alice"][:32] + "p9"):
            assert (await stream_of(ingress, odd))["finish"] is True
