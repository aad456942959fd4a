"""examples.greeter through shared.bus.testing, its ctx.wecom reaching a real sender API (on a
port) in front of the fake WeCom: names, departments, image digests, an expired image."""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from devkit.fakewecom.api import sniff_type
from examples.greeter import router as greeter
from examples.greeter.router import router
from shared.bus.testing import run_events, text_message, texts
from shared.schemas.inbound import ImageMessage
from tests.sender_kit import API_KEY, Kit, sender_kit
from tests.test_fakewecom import Servers

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 3
Served = tuple[Kit, dict[str, str], list[float]]


@pytest.fixture
async def served(redis_url: str, redis: Redis) -> AsyncIterator[Served]:
    """The kit's sender API on a real port; the consumer's environment; the fake's clock."""
    now = [time.time()]
    async with sender_kit(redis_url, clock=lambda: now[0]) as kit:
        servers = Servers()
        try:
            url = await servers.start(kit.api._transport.app)  # type: ignore[attr-defined]
            yield kit, {"SENDER_URL": url, "SENDER_API_KEY": API_KEY}, now
        finally:
            await servers.stop()


def image_from(kit: Kit, user: str) -> ImageMessage:
    media = kit.fake.fake.store_media("default", "image", "photo.jpg", JPEG, sniff_type(JPEG))
    return ImageMessage(
        to_user="wwcorp",
        from_user=user,
        create_time=int(time.time()),
        msg_id=int(time.time_ns() // 1000),
        media_id=media.media_id,
    )


async def test_a_text_is_greeted_with_name_and_department(
    served: Served,
) -> None:
    kit, env, _ = served
    out = await run_events(kit.redis, router, [text_message("hi", "bob")], environ=env)
    assert texts(out) == ["你好, Bob (Head Office)! Hello, Bob (Head Office)!"]
    assert out[0].request.touser == "bob"


async def test_an_image_is_described_and_an_old_one_explained(
    served: Served,
) -> None:
    kit, env, now = served
    fresh = image_from(kit, "carol")
    out = await run_events(kit.redis, router, [fresh], environ=env)
    digest = hashlib.sha256(JPEG).hexdigest()
    assert texts(out) == [f"photo.jpg: {len(JPEG)} bytes, image/jpeg, sha256 {digest}"]
    old = image_from(kit, "carol")
    now[0] += 3 * 86_400 + 60
    out = await run_events(kit.redis, router, [old], environ=env)
    assert texts(out) == ["That image is older than 3 days; WeCom no longer has it."]


async def test_without_the_gateway_the_handler_fails_naming_the_variables(redis: Redis) -> None:
    with pytest.raises(AssertionError, match="SENDER_URL"):
        await run_events(redis, router, [text_message("hi")])


@pytest.mark.parametrize("doc", ["gateway.md", "gateway.zh.md"])
def test_the_docs_show_the_greeters_code(doc: str) -> None:
    text = (Path(__file__).parent.parent / "docs" / doc).read_text(encoding="utf-8")
    for handler in (greeter.greet, greeter.describe):
        assert inspect.getsource(handler) in text, handler.__name__
