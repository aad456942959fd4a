"""The directory behaviour keeps the Redis copy fresh from change_contact events (details read
through the sender's gateway, served for real on a port), and ``ctx.directory`` answers from
the copy without calling WeCom, falling back to the gateway on a miss."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from services.directory import router as directory
from shared.bus import Context, Router
from shared.bus.testing import run_events, text_message
from shared.schemas.inbound import (
    CreatePartyEvent,
    CreateUserEvent,
    DeleteUserEvent,
    TextMessage,
    UpdateUserEvent,
)
from tests.sender_kit import API_KEY, Kit, sender_kit
from tests.test_fakewecom import Servers


@pytest.fixture
async def served(redis_url: str, redis: Redis) -> AsyncIterator[tuple[Kit, dict[str, str]]]:
    """The kit's sender API on a real port, and the environment a consumer needs to reach it."""
    async with sender_kit(redis_url) as kit:
        servers = Servers()
        try:
            url = await servers.start(kit.api._transport.app)  # type: ignore[attr-defined]
            yield kit, {"SENDER_URL": url, "SENDER_API_KEY": API_KEY}
        finally:
            await servers.stop()


def contact(kind: type[Any], **fields: Any) -> Any:
    change = kind.__struct_config__.tag.rsplit(".", 1)[1]
    return kind(
        to_user="wwcorp",
        from_user="sys",
        create_time=int(time.time()),
        event="change_contact",
        change_type=change,
        **fields,
    )


def user_gets(kit: Kit) -> int:
    return kit.fake.fake.api_calls.get("user/get", 0)


async def test_contact_events_keep_the_copy_and_lookups_skip_wecom(
    served: tuple[Kit, dict[str, str]],
) -> None:
    kit, env = served
    await run_events(kit.redis, directory, [contact(CreateUserEvent, user_id="alice")], environ=env)
    assert user_gets(kit) == 1
    fake = kit.fake.fake
    fake.config = msgspec.structs.replace(fake.config, member_names={"alice": "Alice Li"})
    await run_events(kit.redis, directory, [contact(UpdateUserEvent, user_id="alice")], environ=env)
    await run_events(kit.redis, directory, [contact(CreatePartyEvent, id=1)], environ=env)

    seen: list[Any] = []
    team = Router("team")

    @team.on(TextMessage)
    async def who(msg: TextMessage, ctx: Context) -> None:
        user = await ctx.directory.user(msg.from_user)
        department = await ctx.directory.department(1)
        seen.append((user and user["name"], department and department["name"]))

    before = user_gets(kit)
    await run_events(kit.redis, team, [text_message("hi", "alice")], environ=env)
    assert seen == [("Alice Li", "Head Office")]
    assert user_gets(kit) == before  # from the copy: no WeCom call on the hot path

    await run_events(kit.redis, directory, [contact(DeleteUserEvent, user_id="alice")], environ=env)
    await run_events(kit.redis, team, [text_message("hi", "bob")], environ=env)
    assert seen[-1] == ("Bob", "Head Office") and user_gets(kit) == before + 1  # a miss: asked
    await run_events(kit.redis, team, [text_message("hi", "zed")], environ=env)
    assert seen[-1] == (None, "Head Office")  # WeCom does not know zed (60111)
