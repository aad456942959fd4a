"""The assistant's pure parts: settings, the chat client against the stand-in, answer parts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from devkit.fakellm import DEFAULT_KEY, DEFAULT_MODEL, FakeLLM, Fault, create_app, long_text
from examples.assistant.config import AssistantConfig
from examples.assistant.llm import ChatClient, Message, ModelError, retry_after
from examples.assistant.parts import Parts, cut_point, split_text
from shared.errors import ConfigError

ENV = {"LLM_BASE_URL": "http://llm/v1", "LLM_API_KEY": DEFAULT_KEY, "LLM_MODEL": DEFAULT_MODEL}


@pytest.fixture
def fake() -> FakeLLM:
    return FakeLLM()


async def open_client(fake: FakeLLM, **env: str) -> ChatClient:
    config = AssistantConfig.from_environ({**ENV, **env})
    return ChatClient.open(config, httpx.ASGITransport(app=create_app(fake)))


@pytest.fixture
async def client(fake: FakeLLM) -> AsyncIterator[ChatClient]:
    chat = await open_client(fake)
    yield chat
    await chat.aclose()


# -- settings ---------------------------------------------------------------------------------


def test_settings_from_the_environment() -> None:
    config = AssistantConfig.from_environ(
        {**ENV, "LLM_SYSTEM_PROMPT": " 你是助手 ", "LLM_TIMEOUT": "30", "LLM_STREAM": "false"}
    )
    assert (config.url, config.model, config.system_prompt) == (
        "http://llm/v1/chat/completions",
        DEFAULT_MODEL,
        "你是助手",
    )
    assert (config.timeout, config.stream, config.interim_after) == (30.0, False, 5.0)
    assert DEFAULT_KEY not in repr(config)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"LLM_BASE_URL": ""}, "LLM_BASE_URL"),
        ({"LLM_BASE_URL": "ftp://x"}, "LLM_BASE_URL"),
        ({"LLM_BASE_URL": "https://user:pw@llm/v1"}, "LLM_BASE_URL"),
        ({"LLM_MODEL": " "}, "LLM_MODEL"),
        ({"LLM_TIMEOUT": "soon"}, "LLM_TIMEOUT"),
        ({"LLM_TIMEOUT": "0"}, "LLM_TIMEOUT"),
        ({"LLM_STREAM": "maybe"}, "LLM_STREAM"),
        ({"ASSISTANT_MEMORY_TURNS": "0"}, "ASSISTANT_MEMORY_TURNS"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AssistantConfig.from_environ({**ENV, **env})
    assert caught.value.variable == variable
    assert DEFAULT_KEY not in str(caught.value)


# -- the chat client --------------------------------------------------------------------------


async def test_complete_and_stream_send_key_model_and_messages(
    client: ChatClient, fake: FakeLLM
) -> None:
    messages = [
        Message("user", "我的名字是小明"),
        Message("assistant", "好"),
        Message("user", "我叫什么"),
    ]
    assert await client.complete(messages) == "你叫小明。"
    pieces = [p async for p in client.stream([Message("user", "long please")])]
    assert len(pieces) > 100 and "".join(pieces) == long_text()
    assert [(r["authorized"], r["model"], r["stream"]) for r in fake.requests] == [
        (True, DEFAULT_MODEL, False),
        (True, DEFAULT_MODEL, True),
    ]
    assert fake.requests[0]["messages"][1] == {"role": "assistant", "content": "好"}


async def test_no_key_sends_no_authorization(fake: FakeLLM) -> None:
    chat = await open_client(fake, LLM_API_KEY="")
    with pytest.raises(ModelError) as caught:
        await chat.complete([Message("user", "hi")])
    await chat.aclose()
    assert caught.value.kind == "auth"
    assert [r["authorized"] for r in fake.requests] == [False]


@pytest.mark.parametrize(
    ("fault", "kind", "status", "wait"),
    [
        (Fault(status=401), "auth", 401, None),
        (Fault(status=403), "auth", 403, None),
        (Fault(status=429, retry_after=7), "rate", 429, 7.0),
        (Fault(status=429), "rate", 429, None),
        (Fault(status=500), "down", 500, None),
        (Fault(status=503), "down", 503, None),
        (Fault(status=408), "down", 408, None),
        (Fault(status=400), "refused", 400, None),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_errors_map_to_kinds(
    client: ChatClient,
    fake: FakeLLM,
    fault: Fault,
    kind: str,
    status: int,
    wait: float | None,
    stream: bool,
) -> None:
    fake.faults.append(fault)
    with pytest.raises(ModelError) as caught:
        if stream:
            _ = [p async for p in client.stream([Message("user", "hi")])]
        else:
            await client.complete([Message("user", "hi")])
    assert (caught.value.kind, caught.value.status, caught.value.retry_after) == (
        kind,
        status,
        wait,
    )


async def test_errors_never_carry_the_key(fake: FakeLLM) -> None:
    # The stand-in echoes an unknown model's name; a model named after the key must not leak it.
    chat = await open_client(fake, LLM_MODEL=f"m-{DEFAULT_KEY}")
    with pytest.raises(ModelError) as caught:
        await chat.complete([Message("user", "hi")])
    await chat.aclose()
    assert caught.value.kind == "refused" and caught.value.status == 404
    assert "does not exist" in str(caught.value) and DEFAULT_KEY not in str(caught.value)


async def test_unreachable_model_is_down() -> None:
    config = AssistantConfig.from_environ({**ENV, "LLM_BASE_URL": "http://127.0.0.1:9/v1"})
    chat = ChatClient.open(config)
    with pytest.raises(ModelError) as caught:
        await chat.complete([Message("user", "hi")])
    await chat.aclose()
    assert caught.value.kind == "down" and caught.value.status is None


def test_retry_after_reads_seconds_and_dates() -> None:
    assert retry_after("12") == 12.0
    assert retry_after("-3") == 0.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    assert 50 < (retry_after(later) or 0) <= 60
    assert retry_after(None) is None and retry_after("soon") is None


# -- gathering parts --------------------------------------------------------------------------


def stream_of(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 7, 100, 10_000])
def test_parts_of_a_long_answer_are_whole_ordered_and_small(size: int) -> None:
    text, out = long_text(), []
    parts = Parts(max_bytes=1800, min_bytes=300)
    first_ready_after = None
    for n, piece in enumerate(stream_of(text, size)):
        ready = parts.feed(piece)
        if ready and first_ready_after is None:
            first_ready_after = n
        out += ready
    out += parts.finish()
    assert "\n\n".join(out) == text
    assert all(0 < len(p.encode()) <= 1800 for p in out)
    assert out[0] == text.split("\n\n")[0]  # the first paragraph alone, early …
    if size < len(text):
        assert first_ready_after is not None and first_ready_after < len(text) // size // 2
    assert len(out) < len(text.split("\n\n"))  # … later short paragraphs travel together


def test_a_paragraph_longer_than_a_part_is_cut_at_sentences() -> None:
    sentence = "这是一个句子，用来测试切分。"  # 42 bytes
    text = sentence * 100
    parts = Parts(max_bytes=500, min_bytes=100)
    out = [p for piece in stream_of(text, 13) for p in parts.feed(piece)] + parts.finish()
    assert "".join(out) == text
    assert all(len(p.encode()) <= 500 and p.endswith("。") for p in out)


def test_short_answers_come_whole_at_the_end() -> None:
    parts = Parts()
    assert parts.feed("你叫") == [] and parts.feed("小明。") == []
    assert parts.finish() == ["你叫小明。"] and parts.finish() == []


def test_cutting_keeps_characters_whole() -> None:
    text = "🎉" * 100  # four bytes each, no good place to cut
    assert cut_point(text, 10) == 2
    assert all(len(p.encode()) <= 10 for p in split_text(text, 10))
    assert "".join(split_text(text, 10)) == text
    assert cut_point("ab", 10) == 2
    with pytest.raises(ValueError):
        Parts(max_bytes=100, min_bytes=200)
