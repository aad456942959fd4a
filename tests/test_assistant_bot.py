"""The assistant answering an AI bot: the ingress stores the member's message, a real consumer
runs ``examples.assistant:router`` against the stand-in model, and WeCom's polls see the
model's pieces appear on the stream as they are written, then the stream finish."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from devkit.fakellm import Fault, long_text
from examples.assistant import router
from examples.assistant.behaviour import REPLIES
from shared.bus import names, streams
from shared.bus.options import ConsumerOptions
from shared.bus.router import State
from shared.bus.worker import Consumer
from shared.config import load_settings
from tests.test_aibot_ingress import EVENTS, post, sample
from tests.test_aibot_router import ingress, stream_of
from tests.test_assistant import Model

__all__ = ["ingress"]  # the fixture, shared with the bot router tests


@pytest.fixture
async def model() -> AsyncIterator[Model]:
    async with Model() as running:
        yield running


async def consume(redis: Redis, model: Model) -> None:
    """One burst of the "assistant" group over what is new on the events stream."""
    group = "assistant"
    await streams.ensure_group(redis, EVENTS, group, start="backlog")
    env = model.env(BUS_PREFIX="wecom")
    state = State(settings=load_settings(env), redis=redis, environ=env)
    consumer = Consumer(
        redis,
        stream=EVENTS,
        group=group,
        handler=router.handler("wecom", state=state, max_deliveries=1),
        options=ConsumerOptions(
            concurrency=1, prefix="wecom", max_deliveries=1, claim_idle=0.5, handler_timeout=30.0
        ),
    )
    await router.startup(state)
    try:
        await consumer.run_burst()
    finally:
        await router.shutdown(state)
    assert await redis.xlen(names.deadletter("wecom")) == 0


async def ask(ingress: httpx.AsyncClient, text: str, user: str = "zhangsan") -> str:
    """Post a member's text to the bot (in a group, with its @mention); the stream id."""
    message = sample(
        "text_group",
        msgid=secrets.token_hex(8),
        text={"content": f"@RobotA {text}"},
        **{"from": {"userid": user}},
    )
    stream_id: str = (await post(ingress, message)).reply["stream"]["id"]
    return stream_id


async def answer(ingress: httpx.AsyncClient, redis: Redis, model: Model, text: str) -> Any:
    stream_id = await ask(ingress, text)
    await consume(redis, model)
    return await stream_of(ingress, stream_id)


async def test_a_bot_member_is_remembered_until_reset(
    ingress: httpx.AsyncClient, redis: Redis, model: Model
) -> None:
    first = await answer(ingress, redis, model, "我的名字是小明")
    assert first["finish"] is True and first["content"]
    named = await answer(ingress, redis, model, "我叫什么?")
    assert named["finish"] is True and "小明" in named["content"]
    reset = await answer(ingress, redis, model, "新对话")
    assert reset["content"] == REPLIES["reset"]
    forgotten = await answer(ingress, redis, model, "我叫什么?")
    assert "小明" not in forgotten["content"]
    assert len(model.fake.requests) == 3  # the reset asks no model


async def test_the_answer_grows_on_the_stream_as_the_model_writes(
    ingress: httpx.AsyncClient, redis: Redis, model: Model
) -> None:
    model.fake.chunk_delay = 0.005  # hundreds of small pieces: about three seconds in all
    stream_id = await ask(ingress, "long please")
    running = asyncio.create_task(consume(redis, model))
    seen: list[dict[str, Any]] = []
    while not running.done():
        seen.append(await stream_of(ingress, stream_id))
        await asyncio.sleep(0.2)
    await running
    final = await stream_of(ingress, stream_id)
    assert final == {"id": stream_id, "finish": True, "content": long_text()}
    growing = [s["content"] for s in seen if s["content"] and not s["finish"]]
    assert len(set(growing)) >= 2, "the member saw no partial answer"
    assert all(long_text().startswith(text) for text in growing)


async def test_a_model_failure_finishes_the_stream_politely(
    ingress: httpx.AsyncClient, redis: Redis, model: Model
) -> None:
    model.fake.faults.append(Fault(status=503, count=1))  # the only delivery: no Retry
    down = await answer(ingress, redis, model, "hi")
    assert down == {"id": down["id"], "finish": True, "content": REPLIES["down"]}
    model.fake.faults.append(Fault(status=401, count=1))  # a rejected key
    refused = await answer(ingress, redis, model, "hi")
    assert refused["finish"] is True and refused["content"] == REPLIES["auth"]
