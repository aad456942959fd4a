"""Handlers recall, update cards, reply to AI bots and attach files through the outbox: the
entries their events commit, then the sender running them against the fake WeCom, once."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from services.sender.actions import ActionHandler
from shared.bus import Context, Router, names, sendstate
from shared.bus.delivery import Delivery
from shared.bus.testing import DeadLettered, read_actions, run_events, text_message
from shared.errors import SchemaError
from shared.schemas.actions import (
    ActionEntry,
    BotResponse,
    Recall,
    UpdateCard,
    check_action,
    encode_action,
)
from shared.schemas.aibot import BotText, decode_bot_envelope
from shared.schemas.inbound import TemplateCardEvent, TextMessage
from shared.schemas.outbound import INLINE_MAX, ImageSend
from tests.sender_kit import BASE, Kit, sender_kit
from tests.test_aibot_fake import bots_env, wired
from tests.test_aibot_ingress import BOT, EVENTS

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture
async def kit(redis_url: str, redis: Redis) -> AsyncIterator[Kit]:
    async with sender_kit(redis_url) as made:
        yield made


def card_event(code: str, user: str = "alice") -> TemplateCardEvent:
    return TemplateCardEvent(
        to_user="wwcorp",
        from_user=user,
        create_time=int(time.time()),
        agent_id=1000002,
        event="template_card_event",
        event_key="yes",
        task_id="t-1",
        card_type="button_interaction",
        response_code=code,
    )


async def run(kit: Kit, router: Router, *events: Any) -> list[Any]:
    """The events through ``router`` (on the kit's outbox), then the sender until idle."""
    out = await run_events(kit.redis, router, list(events), prefix=kit.settings.prefix)
    await kit.drain()
    return out


async def sent_card(kit: Kit) -> Any:
    body = {
        "touser": "alice",
        "msgtype": "template_card",
        "template_card": {
            "card_type": "button_interaction",
            "task_id": "t-1",
            "main_title": {"title": "审批"},
            "button_list": [{"text": "同意", "key": "yes"}],
        },
    }
    await kit.put(body)
    await kit.drain()
    return kit.fake.fake.sends[-1]


async def test_a_card_click_updates_the_card_it_came_from_once(kit: Kit) -> None:
    record = await sent_card(kit)
    router = Router("cards")

    @router.on(TemplateCardEvent)
    async def done(event: TemplateCardEvent, ctx: Context) -> UpdateCard:
        return UpdateCard.button(event, "已处理")

    await run(kit, router, card_event(record.response_code))
    assert record.card_update["button"] == {"replace_name": "已处理"}
    assert record.card_update["userids"] == ["alice"]
    [action] = await read_actions(kit.redis, prefix=kit.settings.prefix)
    state = await sendstate.read(kit.redis, kit.settings.prefix, action.id)
    assert state is not None and state.status == "sent"
    # The same entry again (a redelivery after a crash): the sent mark keeps WeCom out of it,
    # where the single-use ResponseCode would now be refused.
    rows: Any = await kit.redis.xrange(names.outbox(kit.settings.prefix))
    await kit.redis.xadd(names.outbox(kit.settings.prefix), rows[-1][1])
    before = kit.wire.paths.count("/cgi-bin/message/update_template_card")
    await kit.drain()
    assert kit.wire.paths.count("/cgi-bin/message/update_template_card") == before == 1
    assert await kit.redis.xlen(names.deadletter(kit.settings.prefix)) == 0


async def test_a_handler_recalls_a_message(kit: Kit) -> None:
    await kit.put({"touser": "bob", "msgtype": "text", "text": {"content": "oops"}})
    await kit.drain()
    record = kit.fake.fake.sends[-1]
    router = Router("recaller")

    @router.on(TextMessage)
    async def recall(msg: TextMessage, ctx: Context) -> None:
        ctx.publish(Recall(msgid=msg.content))

    await run(kit, router, text_message(str(record.msgid), "bob"))
    assert record.recalled is True


async def test_a_refused_action_is_dead_lettered_with_the_errcode(kit: Kit) -> None:
    router = Router("stale")

    @router.on(TemplateCardEvent)
    async def done(event: TemplateCardEvent, ctx: Context) -> UpdateCard:
        return UpdateCard.button(event, "done")

    [] = await run(kit, router, card_event("no-such-code"))
    [action] = await read_actions(kit.redis, prefix=kit.settings.prefix)
    state = await sendstate.read(kit.redis, kit.settings.prefix, action.id)
    assert state is not None and state.status == "dead" and state.errcode == 40035
    letters: Any = await kit.redis.xrange(names.deadletter(kit.settings.prefix))
    assert b"errcode 40035" in letters[-1][1][b"error"]


async def test_an_ai_bot_response_goes_once_and_a_refusal_is_final(kit: Kit) -> None:
    url = f"{BASE}/cgi-bin/aibot/response?response_code=unknown"
    router = Router("bot")

    @router.on(TextMessage)
    async def later(msg: TextMessage, ctx: Context) -> BotResponse:
        return BotResponse.markdown(url, "**answer**")

    await run(kit, router, text_message("q"))
    assert kit.wire.paths.count("/cgi-bin/aibot/response") == 1  # never retried
    [action] = await read_actions(kit.redis, prefix=kit.settings.prefix)
    state = await sendstate.read(kit.redis, kit.settings.prefix, action.id)
    assert state is not None and state.status == "dead"


async def test_an_attachment_is_uploaded_once_and_sent(kit: Kit) -> None:
    router = Router("pics")

    @router.on(TextMessage)
    async def picture(msg: TextMessage, ctx: Context) -> Any:
        return ImageSend.upload_reply(msg, PNG, filename="chart.png", content_type="image/png")

    kit.fault(-1)  # the first send fails after the upload: the retry must not upload again
    [entry] = await run(kit, router, text_message("chart please", "carol"))
    assert entry.upload is not None and entry.upload.content == PNG
    assert kit.wire.paths.count("/cgi-bin/media/upload") == 1
    [delivered] = [r for r in kit.fake.fake.sends if r.status == "delivered"]
    media = kit.fake.fake.media[delivered.body["image"]["media_id"]]
    assert media.content == PNG and media.filename == "chart.png"


def test_attachments_and_actions_are_validated_when_made() -> None:
    with pytest.raises(SchemaError, match="media"):
        ImageSend.upload("alice", b"not an image at all", filename="x.png")
    with pytest.raises(SchemaError, match="2097152"):
        ImageSend.upload("alice", PNG + bytes(INLINE_MAX), filename="big.png")
    with pytest.raises(SchemaError, match="msgid"):
        check_action(Recall(msgid=" "))
    with pytest.raises(SchemaError, match="response_code"):
        UpdateCard.button(card_event(""), "x")


async def test_an_invalid_action_fails_its_handler(redis: Redis) -> None:
    router = Router("bad")

    @router.on(TextMessage)
    async def recall(msg: TextMessage, ctx: Context) -> Recall:
        return Recall(msgid="  ")

    with pytest.raises(DeadLettered, match="msgid"):
        await run_events(redis, router, [text_message("x")])
    assert await read_actions(redis) == []


async def test_the_sender_answers_an_ai_bot_message_through_its_response_url_once(
    redis_url: str, redis: Redis, tmp_path: Path
) -> None:
    env = {**bots_env(redis_url, tmp_path), "WECOM_API_BASE": "http://fake"}
    bots, fake = wired(redis_url, redis, env)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=fake))
    actions = ActionHandler(
        redis, prefix="wecom", clients={}, http=http, api_base="http://fake", backoff=lambda n: 0.1
    )
    try:
        record = await bots.send_text(BOT, "alice", "please answer later")
        entries: Any = await redis.xrange(EVENTS)
        stored = decode_bot_envelope(entries[0][1][b"data"]).event
        assert isinstance(stored, BotText)
        entry = ActionEntry(
            id="r1",
            app="default",
            trace_id="t",
            created_at=time.time(),
            action=BotResponse.markdown(stored.response_url, "Here is **the** answer."),
        )
        fields = {b"action": encode_action(entry)}
        for count in (1, 2):  # a redelivery: the sent mark keeps it from a second post
            await actions(Delivery("1-0", "wecom:outbox", fields, count))
        shown = (await http.get("http://fake/fake/bot/messages")).json()["messages"]
        mine = next(r for r in shown if r["seq"] == record.seq)
        assert mine["responses"] == [
            {"msgtype": "markdown", "markdown": {"content": "Here is **the** answer."}}
        ]
        state = await sendstate.read(redis, "wecom", "r1")
        assert state is not None and state.status == "sent"
    finally:
        await http.aclose()
        await bots.aclose()
