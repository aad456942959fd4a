"""AI-bot callbacks against the ingress as a real process (uvicorn on loopback) and real Redis.

The test plays WeCom (signed, encrypted JSON callbacks; refresh polls until the reply says
finished) and the behaviour (writing the stream's text into Redis piece by piece).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from devkit.embedded_redis import free_port
from shared.aibot.streams import BotStreams
from shared.protocol.aibot import build_bot_callback, build_bot_url_verification, decrypt_bot_reply
from tests.system import System, running_system
from tests.test_aibot_ingress import BOT, EVENTS, WECOM, bots_file, poll_of, sample


async def call(client: httpx.AsyncClient, url: str, callback: dict[str, Any]) -> Any:
    params, body = build_bot_callback(
        WECOM, callback, timestamp=str(int(time.time())), nonce="nonce42"
    )
    response = await client.post(url, params=params, content=body)
    assert response.status_code == 200, response.text
    return decrypt_bot_reply(WECOM, response.content, nonce="nonce42")


async def test_a_bot_answer_streams_over_polls_in_a_real_ingress(
    redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    env = {"WECOM_BOTS_FILE": bots_file(tmp_path, welcome="hello")}
    with running_system(redis_url, tmp_path, services=("ingress",), **env) as system:
        url = system.url("ingress", f"/bot/{BOT}")
        async with httpx.AsyncClient(timeout=10) as client:
            params = build_bot_url_verification(
                WECOM, b"echo", timestamp=str(int(time.time())), nonce="x"
            )
            assert (await client.get(url, params=params)).content == b"echo"

            message = sample("text_group")
            first = await call(client, url, message)
            stream_id = first["stream"]["id"]
            assert first["stream"] == {"id": stream_id, "finish": False, "content": ""}
            again = await call(client, url, message)  # WeCom retried the same message
            assert again["stream"]["id"] == stream_id

            streams = BotStreams(redis)
            shown = []
            for seq, piece in enumerate(["流式", "回复", "完成"], start=1):
                await streams.append(BOT, stream_id, seq, piece, finish=seq == 3)
                reply = await call(client, url, poll_of(stream_id))
                shown.append((reply["stream"]["content"], reply["stream"]["finish"]))
            assert shown == [("流式", False), ("流式回复", False), ("流式回复完成", True)]

            unknown = await call(client, url, poll_of("0" * 32))
            assert unknown["stream"]["finish"] is True

            params, body = build_bot_callback(
                WECOM, sample("image"), timestamp=str(int(time.time())), nonce="n"
            )
            bad = {**params, "msg_signature": "f" * 40}
            assert (await client.post(url, params=bad, content=body)).status_code == 403
    assert await redis.xlen(EVENTS) == 1  # the message once; retries, polls and refusals never


@contextlib.contextmanager
def bot_system(redis_url: str, tmp_path: Path, **env: str) -> Iterator[System]:
    """Ingress, fake WeCom (playing the bot from WECOM_BOTS_FILE) and the echo behaviour."""
    # A streaming handler runs as long as its answer grows: more than the 1.6 s the system
    # tests give handlers elsewhere.
    env = {
        "WECOM_BOTS_FILE": bots_file(tmp_path, welcome="hello"),
        "BUS_HANDLER_TIMEOUT": "30",
        **env,
    }
    with running_system(redis_url, tmp_path, services=("ingress",), **env) as system:
        system.env["FAKE_WECOM_CALLBACK_BASE"] = system.url("ingress")
        echo_port = free_port()
        fake_port = str(system.ports["fake-wecom"])
        system.stack.spawn("fake-wecom", "--host", "127.0.0.1", "--port", fake_port)
        system.stack.spawn(
            "responder",
            *("--group", "aibot-echo", "--handlers", "examples.aibot.router:router"),
            *("--host", "127.0.0.1", "--port", str(echo_port)),
            label="aibot-echo",
        )
        system.stack.wait_ready(
            {
                "fake-wecom": system.url("fake-wecom", "/readyz"),
                "aibot-echo": f"http://127.0.0.1:{echo_port}/readyz",
            },
            timeout=60,
        )
        yield system


async def test_fake_wecom_bot_and_echo_behaviour_as_real_processes(
    redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    env = {"FAKE_WECOM_BOT_POLL_INTERVAL": "0.05"}
    with bot_system(redis_url, tmp_path, **env) as system:
        async with httpx.AsyncClient(base_url=system.url("fake-wecom"), timeout=10) as fake:
            assert (await fake.post("/fake/bot/verify", json={"bot": BOT})).json()["ok"] is True
            said = {"bot": BOT, "from": "alice", "content": "one two three four"}
            seq = (await fake.post("/fake/bot/messages", json=said)).json()["seq"]
            record: dict[str, Any] = {}
            for _ in range(300):  # bounded: 30 s
                found = (await fake.get("/fake/bot/messages")).json()["messages"]
                record = next(r for r in found if r["seq"] == seq)
                if record["status"] != "answering":
                    break
                await asyncio.sleep(0.1)
    assert record["status"] == "finished", record
    assert record["answer"] == "one two three four"
    shown = record["shown"]
    assert all(shown[i + 1].startswith(shown[i]) for i in range(len(shown) - 1))  # only grows
