"""Active replies through an AI bot's response_url: checked URL, once only, the fake takes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from redis.asyncio import Redis

from shared.aibot.respond import ResponseUnsent, respond
from shared.bus import names
from shared.errors import SchemaError
from shared.protocol.aibot_reply import (
    check_response_url,
    markdown_response,
    template_card_response,
)
from shared.schemas.aibot import BotText, decode_bot_envelope
from tests.test_aibot_fake import bots_env, wired
from tests.test_aibot_ingress import BOT, EVENTS

REAL = "https://qyapi.weixin.qq.com"
FAKE = "http://fake"


@pytest.mark.parametrize(
    "url",
    [
        "https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=abc",
        "http://fake/cgi-bin/aibot/response?response_code=abc",
    ],
)
def test_response_urls_of_the_api_base_pass(url: str) -> None:
    base = REAL if url.startswith("https") else FAKE
    assert check_response_url(url, base) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/cgi-bin/aibot/response?response_code=abc",
        "http://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=abc",
        "https://qyapi.weixin.qq.com:8443/cgi-bin/aibot/response?response_code=abc",
        "https://qyapi.weixin.qq.com/cgi-bin/message/send?response_code=abc",
        "https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=",
        "https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=a&access_token=x",
        "https://qyapi.weixin.qq.com/cgi-bin/aibot/response",
        "not a url",
    ],
)
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(SchemaError, match="response_url"):
        check_response_url(url, REAL)


def test_response_bodies() -> None:
    assert markdown_response("**hi**", feedback_id="f1") == (
        b'{"msgtype":"markdown","markdown":{"content":"**hi**","feedback":{"id":"f1"}}}'
    )
    with pytest.raises(SchemaError, match="20480"):
        markdown_response("x" * 20481)
    card = template_card_response({"card_type": "text_notice", "task_id": "t1"})
    assert card.startswith(b'{"msgtype":"template_card"')


async def test_a_response_url_is_used_once_and_reaches_the_conversation(
    redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    env = {**bots_env(redis_url, tmp_path), "WECOM_API_BASE": FAKE}
    bots, fake = wired(redis_url, redis, env)
    wecom = httpx.AsyncClient(transport=httpx.ASGITransport(app=fake), base_url=FAKE)
    try:
        record = await bots.send_text(BOT, "alice", "please answer later")
        entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", await redis.xrange(EVENTS))
        stored = decode_bot_envelope(entries[0][1][b"data"]).event
        assert isinstance(stored, BotText) and stored.response_url.startswith(FAKE)
        body = markdown_response("Here is **the** answer.")
        kw: dict[str, Any] = {"url": stored.response_url, "body": body, "api_base": FAKE}
        assert await respond(wecom, redis, **kw) == {"errcode": 0, "errmsg": "ok"}
        again = await respond(wecom, redis, **kw)  # a redelivered handler
        assert again == {"duplicate": True, "first": {"errcode": 0, "errmsg": "ok"}}
        shown = (await wecom.get("/fake/bot/messages")).json()["messages"]
        mine = next(r for r in shown if r["seq"] == record.seq)
        assert mine["responses"] == [
            {"msgtype": "markdown", "markdown": {"content": "Here is **the** answer."}}
        ]
        direct = await wecom.post(stored.response_url, content=body)  # WeCom: once per URL
        assert direct.json()["errcode"] != 0
        assert 3500 < await redis.ttl(await _only_mark(redis)) <= 3600
    finally:
        await wecom.aclose()
        await bots.aclose()


async def _only_mark(redis: Redis) -> str:
    (key,) = await redis.keys(names.bot_response("wecom", "*"))
    return cast("bytes", key).decode()


async def test_nothing_sent_leaves_the_url_usable(redis: Redis) -> None:
    url = "http://127.0.0.1:1/cgi-bin/aibot/response?response_code=abc"
    async with httpx.AsyncClient() as client:
        with pytest.raises(ResponseUnsent):
            await respond(client, redis, url=url, body=b"{}", api_base="http://127.0.0.1:1")
    assert await redis.keys(names.bot_response("wecom", "*")) == []
