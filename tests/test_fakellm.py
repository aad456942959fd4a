"""The stand-in chat completions server: OpenAI's shape, its checks, its "model", its faults."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devkit.fakellm import (
    DEFAULT_KEY,
    DEFAULT_MODEL,
    FakeLLM,
    command,
    create_app,
    long_text,
)

ROOT = Path(__file__).resolve().parent.parent
AUTH = {"Authorization": f"Bearer {DEFAULT_KEY}"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(FakeLLM())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://llm") as http:
        yield http


def chat(*texts: str, stream: bool = False, model: str = DEFAULT_MODEL) -> dict[str, Any]:
    messages = [{"role": "user", "content": t} for t in texts]
    return {"model": model, "messages": messages, "stream": stream}


async def ask(client: httpx.AsyncClient, *texts: str) -> str:
    response = await client.post("/v1/chat/completions", json=chat(*texts), headers=AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    content: str = body["choices"][0]["message"]["content"]
    return content


async def test_answers_from_the_messages_it_is_sent(client: httpx.AsyncClient) -> None:
    assert await ask(client, "我的名字是小明", "我叫什么?") == "你叫小明。"
    assert await ask(client, "我叫什么?") == "我还不知道你的名字。"  # it remembers nothing
    assert await ask(client, "my name is Alice", "What is my name?") == "你叫Alice。"
    assert await ask(client, "你好") == "收到：你好"


async def test_long_answers_mix_scripts_in_paragraphs(client: httpx.AsyncClient) -> None:
    text = await ask(client, "please write a long answer")
    assert text == long_text()
    assert 5_000 <= len(text.encode()) < 6_000
    paragraphs = text.split("\n\n")
    assert len(paragraphs) > 10
    assert all("🚀" in p and "Paragraph" in p and "企业微信" in p for p in paragraphs)


async def test_streams_chunks_then_done(client: httpx.AsyncClient) -> None:
    body = chat("我的名字是小明", "我叫什么", stream=True)
    response = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[len("data: ") :] for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "你叫小明。"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {DEFAULT_KEY}", "Bearer"])
async def test_a_wrong_or_missing_key_is_401(client: httpx.AsyncClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = await client.post("/v1/chat/completions", json=chat("hi"), headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    recorded = (await client.get("/_fake/requests")).json()
    assert [r["authorized"] for r in recorded] == [False]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b'{"messages": []}', 400),
        (json.dumps(chat("hi", model="gpt-unknown")).encode(), 404),
        (json.dumps({"model": DEFAULT_MODEL, "messages": []}).encode(), 400),
        (json.dumps({"model": DEFAULT_MODEL, "messages": [{"role": 1}]}).encode(), 400),
    ],
)
async def test_bad_requests_get_4xx(client: httpx.AsyncClient, body: bytes, status: int) -> None:
    response = await client.post("/v1/chat/completions", content=body, headers=AUTH)
    assert response.status_code == status
    assert "error" in response.json()


async def test_records_requests_without_the_key(client: httpx.AsyncClient) -> None:
    await ask(client, "one")
    await client.post("/v1/chat/completions", json=chat("two", stream=True), headers=AUTH)
    recorded = (await client.get("/_fake/requests")).json()
    assert [(r["authorized"], r["model"], r["stream"]) for r in recorded] == [
        (True, DEFAULT_MODEL, False),
        (True, DEFAULT_MODEL, True),
    ]
    assert recorded[1]["messages"] == [{"role": "user", "content": "two"}]
    assert DEFAULT_KEY not in json.dumps(recorded)
    assert (await client.delete("/_fake/requests")).status_code == 204
    assert (await client.get("/_fake/requests")).json() == []


async def test_faults_are_used_in_order_then_gone(client: httpx.AsyncClient) -> None:
    await client.post("/_fake/faults", json={"status": 429, "retry_after": 2, "count": 2})
    await client.post("/_fake/faults", json={"status": 500})
    await client.post("/_fake/faults", json={"delay": 0.01})
    url, body = "/v1/chat/completions", chat("hi")
    statuses = []
    for _ in range(5):
        response = await client.post(url, json=body, headers=AUTH)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.headers["retry-after"] == "2"
    assert statuses == [429, 429, 500, 200, 200]
    await client.post("/_fake/faults", json={"status": 503})
    assert (await client.delete("/_fake/faults")).status_code == 204
    assert (await client.post(url, json=body, headers=AUTH)).status_code == 200


@pytest.mark.parametrize(
    "fault", [b"{", b'{"status": 200}', b'{"count": 0}', b'{"delay": -1}', b'{"status": "x"}']
)
async def test_bad_faults_are_400(client: httpx.AsyncClient, fault: bytes) -> None:
    assert (await client.post("/_fake/faults", content=fault)).status_code == 400


def test_runs_as_a_process() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(command(port, api_key="k1", chunk_delay=0.001), cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1).raise_for_status()
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        body = chat("你好")
        ok = httpx.post(
            f"{url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer k1"}
        )
        assert ok.json()["choices"][0]["message"]["content"] == "收到：你好"
        wrong = httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH)
        assert wrong.status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)
