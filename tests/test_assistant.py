"""The assistant behaviour on a real Redis against the stand-in model served over HTTP.

Each test runs ``examples.assistant:router`` with ``run_events``: its startup hook reads the
settings below and opens the pooled client; events go through a real consumer group.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from redis.asyncio import Redis

from devkit.fakellm import DEFAULT_KEY, DEFAULT_MODEL, FakeLLM, Fault, create_app, long_text
from examples.assistant import router
from examples.assistant.behaviour import REPLIES, Assistant
from shared.bus import names
from shared.bus.router import Context, State
from shared.bus.testing import DeadLettered, read_outbox, run_events, text_message, texts
from shared.config import load_settings
from shared.schemas.envelope import OutboxEntry

PREFIX = "test"


class Model:
    """The stand-in on a free port of 127.0.0.1, in this event loop."""

    def __init__(self) -> None:
        self.fake = FakeLLM()
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(self.fake), port=0, log_config=None, access_log=False)
        )
        self.url = ""

    async def __aenter__(self) -> Model:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.005)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *_: object) -> None:
        self.server.should_exit = True
        await self.task

    def env(self, **more: str) -> dict[str, str]:
        return {
            "LLM_BASE_URL": self.url,
            "LLM_API_KEY": DEFAULT_KEY,
            "LLM_MODEL": DEFAULT_MODEL,
            "ASSISTANT_INTERIM_AFTER": "0",
            "ASSISTANT_PART_WAIT": "0",  # no sender here to deliver the parts
            **more,
        }


@pytest.fixture
async def model() -> AsyncIterator[Model]:
    async with Model() as running:
        yield running


async def say(
    redis: Redis, model: Model, text: str, user: str = "alice", **env: str
) -> list[OutboxEntry]:
    """Run one text through the router; the consumer and the settings agree on max deliveries."""
    env.setdefault("BUS_MAX_DELIVERIES", "1")
    return await run_events(
        redis,
        router,
        [text_message(text, user)],
        prefix=PREFIX,
        environ=model.env(**env),
        max_deliveries=int(env["BUS_MAX_DELIVERIES"]),
    )


async def test_remembers_a_name_until_reset(redis: Redis, model: Model) -> None:
    assert texts(await say(redis, model, "我的名字是小明")) == ["收到：我的名字是小明"]
    answer = await say(redis, model, "我叫什么?")
    assert texts(answer) == ["你叫小明。"] and answer[0].request.touser == "alice"
    assert texts(await say(redis, model, "/reset")) == [REPLIES["reset"]]
    assert texts(await say(redis, model, "我叫什么?")) == ["我还不知道你的名字。"]
    # The model was sent the conversation; the reset one was not sent again.
    last = model.fake.requests[-1]["messages"]
    assert last == [{"role": "user", "content": "我叫什么?"}]


async def test_one_members_words_never_reach_another(redis: Redis, model: Model) -> None:
    await say(redis, model, "我的名字是小明", "alice")
    assert texts(await say(redis, model, "我叫什么?", "bob")) == ["我还不知道你的名字。"]
    assert texts(await say(redis, model, "我叫什么?", "alice")) == ["你叫小明。"]
    await say(redis, model, "新对话", "bob")  # bob's reset leaves alice's conversation alone
    assert texts(await say(redis, model, "我叫什么?", "alice")) == ["你叫小明。"]
    bob_messages = [m for r in model.fake.requests[1:2] for m in r["messages"]]
    assert all("小明" not in m["content"] for m in bob_messages)


async def test_a_long_answer_arrives_whole_in_ordered_parts(redis: Redis, model: Model) -> None:
    entries = await say(redis, model, "写一篇长文 long")
    parts = texts(entries)
    assert len(parts) >= 3
    assert all(len(p.encode()) <= 1800 for p in parts)  # ASSISTANT_PART_BYTES
    assert all(len(p.encode()) >= 800 for p in parts[1:-1])  # ASSISTANT_PART_MIN_BYTES
    assert "\n\n".join(parts) == long_text()
    assert len({e.id for e in entries}) == len(entries)


async def test_key_model_and_system_prompt_are_sent_on_every_call(
    redis: Redis, model: Model
) -> None:
    env = {"LLM_SYSTEM_PROMPT": "你是企业助手", "LLM_STREAM": "false"}
    for text in ("one", "two", "long"):
        await say(redis, model, text, **env)
    await say(redis, model, "three")
    recorded = model.fake.requests
    assert [(r["authorized"], r["model"]) for r in recorded] == [(True, DEFAULT_MODEL)] * 4
    assert [r["stream"] for r in recorded] == [False, False, False, True]
    assert all(
        r["messages"][0] == {"role": "system", "content": "你是企业助手"} for r in recorded[:3]
    )
    assert recorded[3]["messages"][0]["role"] == "user"


async def test_a_rejected_key_gets_a_polite_reply_and_no_retry(
    redis: Redis, model: Model, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    entries = await say(redis, model, "hi", LLM_API_KEY="sk-wrong-key", BUS_MAX_DELIVERIES="3")
    assert texts(entries) == [REPLIES["auth"]]
    assert len(model.fake.requests) == 1 and not model.fake.requests[0]["authorized"]
    assert "model API refused" in caplog.text and "sk-wrong-key" not in caplog.text


async def test_a_rate_limit_is_retried_after_retry_after(redis: Redis, model: Model) -> None:
    model.fake.faults.append(Fault(status=429, retry_after=0.2))
    entries = await say(redis, model, "hi", BUS_MAX_DELIVERIES="3")
    assert texts(entries) == ["收到：hi"]
    assert len(model.fake.requests) == 2


async def test_an_unavailable_model_is_retried_then_answered_politely(
    redis: Redis, model: Model
) -> None:
    model.fake.faults.append(Fault(status=503, count=2))
    env = {"BUS_MAX_DELIVERIES": "2", "ASSISTANT_RETRY_BASE": "0.1"}
    assert texts(await say(redis, model, "hi", **env)) == [REPLIES["down"]]
    assert len(model.fake.requests) == 2
    model.fake.faults.append(Fault(status=500))
    assert texts(await say(redis, model, "again", **env)) == ["收到：again"]


async def test_a_rate_limit_on_the_last_delivery_is_answered(redis: Redis, model: Model) -> None:
    model.fake.faults.append(Fault(status=429, retry_after=60))
    assert texts(await say(redis, model, "hi")) == [REPLIES["rate"]]


async def test_a_timeout_is_answered_politely(redis: Redis, model: Model) -> None:
    model.fake.faults.append(Fault(delay=5))
    assert texts(await say(redis, model, "hi", LLM_TIMEOUT="1")) == [REPLIES["down"]]


async def test_a_slow_model_gets_an_interim_reply_first(redis: Redis, model: Model) -> None:
    model.fake.faults.append(Fault(delay=1))
    env = {"ASSISTANT_INTERIM_AFTER": "0.05", "ASSISTANT_INTERIM_TEXT": "稍等，我想想"}
    assert texts(await say(redis, model, "hi", **env)) == ["稍等，我想想", "收到：hi"]


async def test_bad_settings_stop_the_start(redis: Redis, model: Model) -> None:
    with pytest.raises(Exception, match="LLM_MODEL"):
        await say(redis, model, "hi", LLM_MODEL="")


async def test_a_redelivered_message_is_answered_and_remembered_once(
    redis: Redis, model: Model
) -> None:
    await say(redis, model, "我的名字是小明")
    settings = load_settings({**model.env(), "BUS_PREFIX": PREFIX})
    state = State(settings=settings, redis=redis, environ=model.env())
    await router.startup(state)
    assistant: Assistant = state.assistant
    msg = text_message("long please", "alice")
    base: dict[str, Any] = {"event": msg, "entry_id": "99-0", "stream": names.events(PREFIX)}
    try:
        # The first run reads a fast stream while each part waits for the previous one's
        # delivery (no sender runs), so paragraphs queue up; the retry reads a slow one and
        # sends each part at once. Parts must not depend on timing, or the retry repeats or
        # loses some (it once did, on a loaded machine).
        config = assistant.config
        for delivery, chunk_delay, part_wait in ((1, 0.0, 0.2), (2, 0.002, 0.0)):
            model.fake.chunk_delay = chunk_delay
            assistant.config = dataclasses.replace(config, part_wait=part_wait)
            ctx = Context(**base, delivery=delivery, handler="assistant.chat", state=state)
            assert await assistant.handle(msg, ctx) is None
    finally:
        await router.shutdown(state)
    first, second = model.fake.requests[-2:]
    assert first["messages"] == second["messages"]  # the retry saw what the first one saw
    assert len(first["messages"]) == 3
    outbox = await read_outbox(redis, prefix=PREFIX)
    assert "\n\n".join(texts(outbox[1:])) == long_text()  # each part once
    history = await assistant.memory.history("default", "alice")
    assert [t.id for t in history][-1] == "99-0" and len(history) == 2


async def test_nothing_reaches_the_dead_letter_on_failures(redis: Redis, model: Model) -> None:
    model.fake.faults.append(Fault(status=500, count=5))
    try:
        entries = await say(redis, model, "hi", BUS_MAX_DELIVERIES="1")
    except DeadLettered as exc:  # pragma: no cover - the assertion names the failure
        raise AssertionError(f"dead-lettered: {exc.errors}") from None
    assert texts(entries) == [REPLIES["down"]]


async def test_the_last_delivery_is_the_consumers_not_the_settings(
    redis: Redis, model: Model
) -> None:
    # The settings allow five deliveries, the consumer running the router only one: on that
    # one the member gets the polite reply, not a Retry that would dead-letter the message.
    model.fake.faults.append(Fault(status=503, count=5))
    env = model.env(BUS_MAX_DELIVERIES="5")
    try:
        entries = await run_events(
            redis, router, [text_message("hi")], prefix=PREFIX, environ=env, max_deliveries=1
        )
    except DeadLettered as exc:  # pragma: no cover - the assertion names the failure
        raise AssertionError(f"dead-lettered: {exc.errors}") from None
    assert texts(entries) == [REPLIES["down"]] and len(model.fake.requests) == 1


async def test_only_the_configured_apps_are_answered(redis: Redis, model: Model) -> None:
    env = model.env(ASSISTANT_APPS="hr, it", BUS_MAX_DELIVERIES="1")
    hr = await run_events(redis, router, [text_message("hi")], app="hr", prefix=PREFIX, environ=env)
    assert texts(hr) == ["收到：hi"]
    other = await run_events(redis, router, [text_message("hi")], prefix=PREFIX, environ=env)
    assert other == [] and len(model.fake.requests) == 1


async def test_waiting_for_the_sender_does_not_count_as_model_time(
    redis: Redis, model: Model
) -> None:
    # No sender runs here, so each part after the first waits the whole ASSISTANT_PART_WAIT
    # for the previous part's delivery: seconds in all, past LLM_TIMEOUT, yet it is not the
    # model that is slow and the answer arrives whole.
    env = {"LLM_TIMEOUT": "4", "ASSISTANT_PART_WAIT": "3"}  # three parts: two waits, 6 s
    parts = texts(await say(redis, model, "long", **env))
    assert len(parts) >= 3 and "\n\n".join(parts) == long_text()
