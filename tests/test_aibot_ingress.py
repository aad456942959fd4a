"""The ingress's AI-bot callback URL, in process against a real Redis.

WeCom's side is played with our own crypto: callbacks built and signed the way WeCom does
(path/101033), replies decrypted and their signature and nonce checked the way WeCom would.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services.ingress.app import create_app
from shared.aibot.streams import BotStreams, stream_id_for
from shared.bus import names
from shared.protocol.aibot import build_bot_callback, build_bot_url_verification, decrypt_bot_reply
from shared.protocol.crypto import CallbackCrypto
from shared.schemas.aibot import (
    BotEnterChat,
    BotText,
    UnknownBotCallback,
    decode_bot_envelope,
)
from tests import helpers

SAMPLES = Path(__file__).parent / "samples" / "aibot"
BOT = "helper"
TOKEN = "BotToken42"
AES_KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkj"
EVENTS = "wecom:events"
WECOM = CallbackCrypto(TOKEN, AES_KEY, "")  # WeCom's side of the bot


def bots_file(tmp_path: Path, **extra: str) -> str:
    lines = [f"[bots.{BOT}]", f'token = "{TOKEN}"', f'encoding_aes_key = "{AES_KEY}"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in extra.items()]
    lines += ["[bots.quiet]", f'token = "{TOKEN}"', f'encoding_aes_key = "{AES_KEY}"']
    path = tmp_path / "bots.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture
async def client(redis_url: str, redis: Redis, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = helpers.settings(
        redis_url, WECOM_BOTS_FILE=bots_file(tmp_path, welcome="你好, ask me anything")
    )
    transport = httpx.ASGITransport(app=create_app(settings, redis=redis))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as c:
        yield c


def sample(name: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))
    return {**data, **changes}


class Posted:
    def __init__(self, response: httpx.Response, nonce: str) -> None:
        self.response = response
        self.reply = decrypt_bot_reply(WECOM, response.content, nonce=nonce)


async def post(
    client: httpx.AsyncClient, callback: dict[str, Any], *, bot: str = BOT, nonce: str = "n1"
) -> Posted:
    params, body = build_bot_callback(WECOM, callback, timestamp=str(int(time.time())), nonce=nonce)
    response = await client.post(f"/bot/{bot}", params=params, content=body)
    assert response.status_code == 200, response.text
    return Posted(response, nonce)


def poll_of(stream_id: str) -> dict[str, Any]:
    return sample("stream", stream={"id": stream_id})


async def entries(redis: Redis) -> list[Any]:
    found = cast("list[tuple[bytes, dict[bytes, bytes]]]", await redis.xrange(EVENTS))
    return [decode_bot_envelope(fields[b"data"]) for _, fields in found]


async def test_url_verification_answers_the_plain_echo(client: httpx.AsyncClient) -> None:
    params = build_bot_url_verification(
        WECOM, b"echo-1234", timestamp=str(int(time.time())), nonce="x"
    )
    response = await client.get(f"/bot/{BOT}", params=params)
    assert response.status_code == 200 and response.content == b"echo-1234"
    assert response.headers["content-type"].startswith("text/plain")
    bad = {**params, "msg_signature": "0" * 40}
    assert (await client.get(f"/bot/{BOT}", params=bad)).status_code == 403
    assert (await client.get(f"/bot/{BOT}", params={"echostr": "x"})).status_code == 400
    assert (await client.get("/bot/nobody", params=params)).status_code == 404


async def test_a_message_starts_a_stream_and_is_stored(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    posted = await post(client, sample("text_group"), nonce="abc123")
    assert posted.response.headers["content-type"] == "application/json"
    envelope = json.loads(posted.response.content)
    assert envelope["nonce"] == "abc123"  # the callback URL's nonce, as documented
    stream_id = stream_id_for(BOT, sample("text_group")["msgid"])
    assert posted.reply == {
        "msgtype": "stream",
        "stream": {"id": stream_id, "finish": False, "content": ""},
    }
    (stored,) = await entries(redis)
    assert stored.bot == BOT and stored.app == "bot:helper" and stored.stream_id == stream_id
    assert isinstance(stored.event, BotText)
    assert stored.event.text.content == "@RobotA hello robot"
    assert stored.event.response_url == "RESPONSEURL"


async def test_duplicate_callbacks_store_once_and_answer_the_same_stream(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    message = sample("voice")
    first = await post(client, message)
    stream_id = first.reply["stream"]["id"]
    await BotStreams(redis).append(BOT, stream_id, 1, "partial")
    again = await post(client, message, nonce="n2")
    assert again.reply["stream"] == {"id": stream_id, "finish": False, "content": "partial"}
    assert len(await entries(redis)) == 1


async def test_a_stream_grows_over_polls_then_finishes_without_touching_the_bus(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    stream_id = (await post(client, sample("image"))).reply["stream"]["id"]
    streams = BotStreams(redis)
    seen = []
    for seq, piece in enumerate(["The ", "answer ", "is 42"], start=1):
        await streams.append(BOT, stream_id, seq, piece)
        seen.append((await post(client, poll_of(stream_id))).reply["stream"])
    await streams.finish(BOT, stream_id, 4, ".")
    seen.append((await post(client, poll_of(stream_id))).reply["stream"])
    assert [(s["content"], s["finish"]) for s in seen] == [
        ("The ", False),
        ("The answer ", False),
        ("The answer is 42", False),
        ("The answer is 42.", True),
    ]
    assert all(s["id"] == stream_id for s in seen)
    assert await redis.xlen(EVENTS) == 1  # only the message; polls are never stored


async def test_unknown_and_expired_streams_are_answered_finished(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    unknown = (await post(client, poll_of("f" * 32))).reply["stream"]
    assert unknown == {
        "id": "f" * 32,
        "finish": True,
        "content": "This reply is no longer available.",
    }
    odd = (await post(client, poll_of("../../etc"))).reply["stream"]
    assert odd["finish"] is True and odd["id"] == "../../etc"
    stream_id = (await post(client, sample("file"))).reply["stream"]["id"]
    await redis.delete(names.bot_stream("wecom", BOT, stream_id))  # its TTL ran out
    expired = (await post(client, poll_of(stream_id))).reply["stream"]
    assert expired["finish"] is True and expired["content"] == unknown["content"]
    assert await redis.keys("wecom:botstream:*") == []  # a poll never creates state


async def test_a_stream_without_an_answer_in_time_is_ended(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    stream_id = (await post(client, sample("mixed"))).reply["stream"]["id"]
    key = names.bot_stream("wecom", BOT, stream_id)
    await redis.hset(key, "c", int((time.time() - 331) * 1000))  # started 331 s ago
    ended = (await post(client, poll_of(stream_id))).reply["stream"]
    assert ended == {"id": stream_id, "finish": True, "content": "Sorry, no answer this time."}
    assert await BotStreams(redis).append(BOT, stream_id, 1, "too late") == "finished"


async def test_enter_chat_gets_the_welcome_text(client: httpx.AsyncClient, redis: Redis) -> None:
    posted = await post(client, sample("enter_chat"))
    assert posted.reply == {"msgtype": "text", "text": {"content": "你好, ask me anything"}}
    quiet = await post(client, sample("enter_chat", msgid="other"), bot="quiet")
    assert quiet.response.content == b"" and quiet.reply is None
    stored = await entries(redis)
    assert [type(e.event) for e in stored] == [BotEnterChat, BotEnterChat]
    assert [e.stream_id for e in stored] == ["", ""]
    assert await redis.keys("wecom:botstream:*") == []


async def test_other_events_and_unknown_types_are_stored_whole(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    card = await post(client, sample("template_card_event"))
    odd = {"msgid": "x1", "msgtype": "sticker", "sticker": {"id": 1}, "from": {"userid": "u"}}
    unknown = await post(client, odd)
    assert card.response.content == b"" and unknown.response.content == b""
    stored = await entries(redis)
    assert len(stored) == 2
    assert isinstance(stored[1].event, UnknownBotCallback) and stored[1].event.fields == odd


async def refused(client: httpx.AsyncClient, params: dict[str, str], body: bytes) -> int:
    return (await client.post(f"/bot/{BOT}", params=params, content=body)).status_code


async def test_bad_callbacks_are_refused_with_4xx_and_nothing_stored(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    now = str(int(time.time()))
    params, body = build_bot_callback(WECOM, sample("text_group"), timestamp=now, nonce="n")
    assert await refused(client, {**params, "msg_signature": "0" * 40}, body) == 403
    assert await refused(client, {**params, "nonce": "other"}, body) == 403
    assert await refused(client, {"timestamp": now, "nonce": "n"}, body) == 400
    assert await refused(client, params, b"not json") == 400
    assert await refused(client, params, b'{"encrypt": 1}') == 400
    assert await refused(client, params, b"x" * 300_000) == 413
    old = str(int(time.time()) - 7200)
    stale, stale_body = build_bot_callback(WECOM, sample("image"), timestamp=old, nonce="n")
    assert await refused(client, stale, stale_body) == 403
    foreign = CallbackCrypto(TOKEN, AES_KEY, "wwsomecorp")  # receive-id must be ""
    other, other_body = build_bot_callback(foreign, sample("image"), timestamp=now, nonce="n")
    assert await refused(client, other, other_body) == 403
    params, body = build_bot_callback(WECOM, {"no": "msgid"}, timestamp=now, nonce="n")
    assert await refused(client, params, body) == 400
    assert (await client.post("/bot/nobody", params=params, content=body)).status_code == 404
    assert (await client.put(f"/bot/{BOT}")).status_code == 405
    assert await redis.xlen(EVENTS) == 0


async def test_redis_down_is_a_503_so_wecom_retries(redis_url: str, tmp_path: Path) -> None:
    settings = helpers.settings(redis_url, WECOM_BOTS_FILE=bots_file(tmp_path))
    dead = Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    transport = httpx.ASGITransport(app=create_app(settings, redis=dead))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as c:
        params, body = build_bot_callback(
            WECOM, sample("image"), timestamp=str(int(time.time())), nonce="n"
        )
        assert (await c.post(f"/bot/{BOT}", params=params, content=body)).status_code == 503
        params, body = build_bot_callback(
            WECOM, poll_of("a" * 32), timestamp=str(int(time.time())), nonce="n"
        )
        assert (await c.post(f"/bot/{BOT}", params=params, content=body)).status_code == 503
    await dead.aclose()
