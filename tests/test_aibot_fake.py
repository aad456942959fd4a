"""The fake WeCom's AI-bot side against the ingress and a behaviour, all in process.

The fake posts the member's message to the ingress, polls the stream as WeCom does, and its
conversation record shows the answer growing; the behaviour is a real consumer of the events
stream whose steps the test releases one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devkit.fakewecom import FakeApp, FakeConfig, FakeWeCom, create_app
from devkit.fakewecom.bot import FakeBots, bots_from_env
from services.ingress.app import create_app as create_ingress
from shared.bus import Context, Router
from shared.config import Secret
from shared.protocol.aibot import encrypt_bot_reply
from shared.protocol.aibot_reply import stream_reply
from shared.protocol.crypto import generate_encoding_aes_key, generate_token
from shared.schemas.aibot import BotText
from tests import helpers
from tests.test_aibot_ingress import BOT, bots_file
from tests.test_aibot_router import consume


@dataclass
class Setup:
    fake: httpx.AsyncClient
    bots: FakeBots

    async def record(self, seq: int) -> dict[str, Any]:
        found = (await self.fake.get("/fake/bot/messages")).json()["messages"]
        record: dict[str, Any] = next(r for r in found if r["seq"] == seq)
        return record

    async def until(self, seq: int, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        for _ in range(500):  # bounded: 10 s
            record = await self.record(seq)
            if check(record):
                return record
            await asyncio.sleep(0.02)
        raise AssertionError(f"conversation {seq} never got there: {record}")


def bots_env(redis_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "WECOM_BOTS_FILE": bots_file(tmp_path, **extra),
        "FAKE_WECOM_CALLBACK_BASE": "http://ingress",
        "FAKE_WECOM_BOT_POLL_INTERVAL": "0.02",
    }


def wired(redis_url: str, redis: Redis, env: dict[str, str]) -> tuple[FakeBots, FakeWeCom]:
    """The fake's bots posting to an in-process ingress, and the fake WeCom serving them."""
    ingress = create_ingress(
        helpers.settings(redis_url, WECOM_BOTS_FILE=env["WECOM_BOTS_FILE"]), redis=redis
    )
    bots = bots_from_env(env)
    bots._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=ingress))
    app = FakeApp(
        name="default",
        corp_id="wwcorp",
        agent_id=1000002,
        secret=Secret("s"),
        token=Secret(generate_token()),
        encoding_aes_key=Secret(generate_encoding_aes_key()),
    )
    return bots, create_app(FakeConfig(apps=(app,)), bots=bots)


@pytest.fixture
async def setup(redis_url: str, redis: Redis, tmp_path: Path) -> AsyncIterator[Setup]:
    bots, fake_app = wired(redis_url, redis, bots_env(redis_url, tmp_path, welcome="Hi there"))
    transport = httpx.ASGITransport(app=fake_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as fake:
        yield Setup(fake, bots)
    await bots.aclose()


async def test_the_fake_polls_a_stream_until_it_finishes(setup: Setup, redis: Redis) -> None:
    assert (await setup.fake.get("/fake/bots")).json() == {"bots": ["helper", "quiet"]}
    steps = [asyncio.Event() for _ in range(3)]
    router = Router("stepper")

    @router.on(BotText)
    async def stepper(msg: BotText, ctx: Context) -> None:
        await steps[0].wait()
        await ctx.bot_stream.append(f"You said: {msg.content}")
        await steps[1].wait()
        await ctx.bot_stream.append(" (twice)")
        await steps[2].wait()
        await ctx.bot_stream.finish()

    sent = await setup.fake.post(
        "/fake/bot/messages", json={"bot": BOT, "from": "bob", "content": "hey"}
    )
    first = sent.json()
    assert first["status"] == "answering" and first["answer"] == "" and first["stream_id"]
    running = asyncio.create_task(consume(redis, router))
    steps[0].set()
    await setup.until(first["seq"], lambda r: r["answer"] == "You said: hey")
    steps[1].set()
    grown = await setup.until(first["seq"], lambda r: r["answer"].endswith("(twice)"))
    assert grown["status"] == "answering"
    steps[2].set()
    done = await setup.until(first["seq"], lambda r: r["status"] != "answering")
    await asyncio.wait_for(running, 10)
    assert done["status"] == "finished" and done["error"] is None
    assert done["shown"] == ["", "You said: hey", "You said: hey (twice)"]
    assert done["polls"] >= 3
    polls_then = done["polls"]
    await asyncio.sleep(0.1)
    assert (await setup.record(first["seq"]))["polls"] == polls_then  # polling stopped


async def test_enter_chat_and_verification_through_the_fake(setup: Setup) -> None:
    welcome = (await setup.fake.post("/fake/bot/enter", json={"bot": BOT, "from": "bob"})).json()
    assert welcome["status"] == "answered" and welcome["answer"] == "Hi there"
    quiet = (await setup.fake.post("/fake/bot/enter", json={"bot": "quiet"})).json()
    assert quiet["status"] == "no_reply"
    assert (await setup.fake.post("/fake/bot/verify", json={"bot": BOT})).json()["ok"] is True
    missing = await setup.fake.post("/fake/bot/messages", json={"bot": "nobody", "content": "x"})
    assert missing.status_code == 404
    empty = await setup.fake.post("/fake/bot/messages", json={"bot": BOT, "content": ""})
    assert empty.status_code == 400


async def test_a_refused_callback_fails_the_conversation(
    redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    env = bots_env(redis_url, tmp_path)
    ingress_settings = helpers.settings(redis_url, WECOM_BOTS_FILE=env["WECOM_BOTS_FILE"])
    other = tmp_path / "other"
    other.mkdir()
    wrong = bots_env(redis_url, other)  # same names, but the fake signs with another token
    Path(wrong["WECOM_BOTS_FILE"]).write_text(
        Path(wrong["WECOM_BOTS_FILE"]).read_text().replace("BotToken42", "OtherToken1"),
        encoding="utf-8",
    )
    bots = bots_from_env(wrong)
    ingress = create_ingress(ingress_settings, redis=redis)
    bots._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=ingress))
    try:
        record = await bots.send_text(BOT, "bob", "hello")
        assert record.status == "failed" and record.error == "HTTP 403"
    finally:
        await bots.aclose()


async def test_closing_ends_the_polls_even_when_a_cancel_is_lost(tmp_path: Path) -> None:
    """On Python 3.11 a cancel landing as redis-py's write finishes is lost (its wait_for) and
    the poll answers as usual: closing must still end the polls, not after six minutes."""
    bots = bots_from_env(bots_env("redis://127.0.0.1:1/0", tmp_path))
    crypto, parked = bots.bot(BOT).crypto, asyncio.Event()
    lost: list[bool] = []

    async def ingress(request: Request) -> Response:  # "still thinking", every time
        if bots.records[-1].polls and not lost:  # the first poll: parked until cancelled
            parked.set()
            with contextlib.suppress(asyncio.CancelledError):  # the lost cancel
                await asyncio.Event().wait()
            lost.append(True)
        plaintext = stream_reply("s1", "thinking", finish=False)
        params = request.query_params
        body = encrypt_bot_reply(crypto, plaintext, params["timestamp"], params["nonce"])
        return Response(body, media_type="application/json")

    app = Starlette(routes=[Route("/bot/{name}", ingress, methods=["POST"])])
    bots._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
    record = await bots.send_text(BOT, "alice", "a long question")
    assert record.status == "answering"
    await asyncio.wait_for(parked.wait(), 10)
    async with asyncio.timeout(10):
        await bots.aclose()
    assert lost and not bots._tasks
