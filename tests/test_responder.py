"""The default responder's router on a real Redis: reply rule, /help, silence for the rest."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from services.responder.__main__ import load_router
from services.responder.handlers import router
from shared.bus.testing import click_event, run_events, text_message, texts
from shared.errors import ConfigError
from shared.schemas.inbound import ImageMessage


async def test_texts_get_the_reply_rule(redis: Redis) -> None:
    out = await run_events(
        redis, router, [text_message("你好吗?"), text_message("在吗？", from_user="bob")]
    )
    assert texts(out) == ["你好!", "在！"]
    assert [e.request.touser for e in out] == ["alice", "bob"]


async def test_a_text_that_becomes_empty_gets_no_reply(redis: Redis) -> None:
    assert await run_events(redis, router, [text_message("吗吗")]) == []


async def test_help_lists_every_behaviour(redis: Redis) -> None:
    for command in ("/help", "帮助", " /help "):
        [entry] = await run_events(redis, router, [text_message(command)])
        [reply] = texts([entry])
        assert "help.show_help" in reply and "echo.reply_rule" in reply
        assert "fallback.other_messages" in reply


async def test_events_and_other_messages_are_acknowledged_without_reply(redis: Redis) -> None:
    image = ImageMessage(
        to_user="corp", from_user="alice", create_time=1, msg_id=9, pic_url="u", media_id="m"
    )
    assert await run_events(redis, router, [click_event("menu"), image]) == []


def test_handlers_option_is_checked() -> None:
    assert load_router("services.responder.handlers:router") is router
    for spec, fragment in (
        ("nocolon", "module:attribute"),
        ("no.such.module:router", "cannot import"),
        ("services.responder.handlers:echo", "is not a Router"),
    ):
        with pytest.raises(ConfigError, match=fragment):
            load_router(spec)


async def test_other_reply_is_configurable(redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from services.responder.handlers import fallback

    monkeypatch.setenv("RESPONDER_OTHER_REPLY", "收到，我们只看得懂文字")
    configured = importlib.reload(fallback)
    try:
        image = ImageMessage(
            to_user="corp", from_user="bob", create_time=1, msg_id=10, pic_url="u", media_id="m"
        )
        out = await run_events(redis, configured.router, [image, click_event("menu")])
        assert texts(out) == ["收到，我们只看得懂文字"]
    finally:
        monkeypatch.delenv("RESPONDER_OTHER_REPLY")
        importlib.reload(fallback)
