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


async def test_help_lists_what_members_can_do_not_handler_names(redis: Redis) -> None:
    for command in ("/help", "帮助", " /help "):
        [entry] = await run_events(redis, router, [text_message(command)])
        [reply] = texts([entry])
        assert reply.splitlines() == [
            "我能做这些 / What I can do:",
            "• /help 或 帮助：列出这些 / this list",
            "• 发一句话，我回一句 / say something, I answer",
        ]
        assert "help.show_help" not in reply and "echo." not in reply


async def test_help_lists_docstrings_and_skips_undescribed_routes(redis: Redis) -> None:
    from services.responder.handlers.help import help_router
    from shared.bus import Context, Router
    from shared.schemas.inbound import TextMessage

    top = Router("team")
    top.include(help_router(top))

    @top.on(TextMessage, when=lambda m, c: m.content.startswith("报修"))
    async def repair(msg: TextMessage, ctx: Context) -> None:
        """报修 …：开一张工单

        Details that stay out of /help.
        """

    @top.on(TextMessage, stop=False, description="")
    async def audit(msg: TextMessage, ctx: Context) -> None:
        """Logs every text."""

    [reply] = texts(await run_events(redis, top, [text_message("帮助")]))
    assert reply.splitlines()[1:] == [
        "• /help 或 帮助：列出这些 / this list",
        "• 报修 …：开一张工单",
    ]


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


async def test_other_reply_comes_from_the_services_settings(redis: Redis) -> None:
    image = ImageMessage(
        to_user="corp", from_user="bob", create_time=1, msg_id=10, pic_url="u", media_id="m"
    )
    environ = {"RESPONDER_OTHER_REPLY": "收到，我们只看得懂文字"}
    out = await run_events(redis, router, [image, click_event("menu")], environ=environ)
    assert texts(out) == ["收到，我们只看得懂文字"]
    assert await run_events(redis, router, [image]) == []  # same module, no setting: silent


async def test_a_reply_wecom_would_refuse_is_dead_lettered_on_the_first_delivery(
    redis: Redis,
) -> None:
    from shared.bus import Context, Router
    from shared.bus.testing import DeadLettered
    from shared.schemas.inbound import TextMessage
    from shared.schemas.outbound import TextSend

    team, calls = Router("team"), []

    @team.on(TextMessage)
    async def blank(msg: TextMessage, ctx: Context) -> TextSend:
        calls.append(ctx.delivery)
        return TextSend.reply_to(msg, "   ")  # WeCom refuses a blank text: never retried

    with pytest.raises(DeadLettered) as caught:
        await run_events(redis, team, [text_message("hi")], max_deliveries=5)
    assert calls == [1]
    [error] = caught.value.errors
    assert error.startswith("SchemaError: $.text.content")
