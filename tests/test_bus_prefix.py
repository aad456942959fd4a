"""BUS_PREFIX may carry a Redis Cluster hash tag ({wecom}, app{x}); anything else odd is refused.

A prefix that is a hash tag is the first brace pair of every key, so Redis hashes only it:
every key of the bus, the per-app tags of the token, rate and circuit keys included, lands in
one slot, and every script (the ingress's dedup mark + XADD among them) runs on a Cluster.
"""

from __future__ import annotations

import httpx
import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from services.ingress.app import create_app
from shared.bus import names
from shared.errors import ConfigError
from tests import helpers
from tests.helpers import post_callback, text_xml


@pytest.mark.parametrize("prefix", ["wecom", "{wecom}", "app{x}", "{t}.prod", "a:b", "x.y-z_1"])
def test_a_sane_prefix_is_accepted(prefix: str) -> None:
    assert helpers.settings("redis://127.0.0.1:6379/0", BUS_PREFIX=prefix).prefix == prefix


@pytest.mark.parametrize(
    "prefix",
    ["a b", "{}", "{a}{b}", "{a", "a}", "}a{", ":wecom", "wecom:", "wé", "{a b}", "x" * 65],
)
def test_an_odd_prefix_is_refused_naming_bus_prefix(prefix: str) -> None:
    with pytest.raises(ConfigError) as info:
        helpers.settings("redis://127.0.0.1:6379/0", BUS_PREFIX=prefix)
    assert info.value.variable == "BUS_PREFIX"
    assert "hash tag" in str(info.value)


def test_a_tagged_prefix_puts_every_key_in_one_slot() -> None:
    prefix = "{wecom}"
    keys = [
        names.events(prefix),
        names.outbox(prefix),
        names.deadletter(prefix),
        names.delayed(prefix),
        names.delayed_data(prefix),
        names.seen(prefix, "default", "msg:1"),
        names.sent(prefix, "r1"),
        names.idempotency(prefix, "d1"),
        names.token(prefix, "wwcorp", 1000002),
        names.token_lock(prefix, "wwcorp", 1000002),
        names.rate_user(prefix, "hr", "alice"),
        names.rate_day(prefix, "hr", "20260101"),
        names.circuit(prefix, "hr"),
        names.retry(names.events(prefix), "responder"),
    ]
    assert {key_slot(k.encode()) for k in keys} == {key_slot(b"wecom")}


async def test_the_ingress_stores_under_a_tagged_prefix(redis_url: str, redis: Redis) -> None:
    app = create_app(helpers.settings(redis_url, BUS_PREFIX="{wecom}"), redis=redis)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ingress"
    ) as client:
        plaintext = text_xml(msg_id=4242)
        for nonce in ("a", "b"):
            query, body = post_callback(plaintext, nonce=nonce)
            assert (await client.post(f"/callback?{query}", content=body)).status_code == 200
    assert await redis.xlen(names.events("{wecom}")) == 1
    assert await redis.exists(names.seen("{wecom}", "default", "msg:4242")) == 1
