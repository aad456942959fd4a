"""The ingress against a real Redis: verify, decrypt, store exactly once, refuse bad input."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlencode

import httpx
import pytest
from redis.asyncio import Redis

from devkit.embedded_redis import EmbeddedRedis
from services.ingress.app import create_app
from shared.config import Settings, load_settings
from shared.schemas.envelope import decode_envelope
from shared.schemas.inbound import TextMessage
from tests import helpers
from tests.helpers import (
    AES_KEY,
    CORP_ID,
    TOKEN,
    event_xml,
    framed,
    pkcs7_32,
    post_callback,
    raw_encrypt,
    signed_envelope,
    text_xml,
)

EVENTS = "wecom:events"


@pytest.fixture
async def client(redis_url: str, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(helpers.settings(redis_url), redis=redis)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as c:
        yield c


async def entries(redis: Redis) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return cast("list[tuple[bytes, dict[bytes, bytes]]]", await redis.xrange(EVENTS))


async def test_set_a_url_verification_answers_the_raw_echostr(redis_url: str, redis: Redis) -> None:
    settings = load_settings(
        {
            "REDIS_URL": redis_url,
            "WECOM_CORP_ID": "wx5823bf96d3bd56c7",
            "WECOM_AGENT_ID": "218",
            "WECOM_TOKEN": "QDG6eK",
            "WECOM_ENCODING_AES_KEY": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
            "INGRESS_MAX_CLOCK_SKEW": "0",  # the vector is from 2014
        }
    )
    transport = httpx.ASGITransport(app=create_app(settings, redis=redis))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as c:
        response = await c.get(
            "/callback?msg_signature=5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3"
            "&timestamp=1409659589&nonce=263014780&echostr=P9nAzCzyDtyTWESHep1vC5X9xho%2FqYX3Zpb4"
            "yKa9SKld1DsH3Iyt3tP3zNdtp%2B4RPcs8TgAE7OaBO%2BFZXvnaqQ%3D%3D"
        )
    assert response.status_code == 200
    assert response.content == b"1616140317555161061"
    assert await entries(redis) == []


async def test_a_valid_post_lands_exactly_one_entry(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    query, body = post_callback(text_xml("你好吗?", msg_id=42))
    response = await client.post(f"/callback?{query}", content=body)
    assert response.status_code == 200
    assert response.content == b""
    stored = await entries(redis)
    assert len(stored) == 1
    envelope = decode_envelope(stored[0][1][b"data"])
    assert envelope.app == "default"
    assert isinstance(envelope.event, TextMessage)
    assert envelope.event.content == "你好吗?"
    assert envelope.event.from_user == "alice"
    assert envelope.dedup_key == "msg:42"
    assert len(envelope.trace_id) == 16
    assert abs(envelope.received_at - time.time()) < 60


async def test_three_deliveries_land_one(client: httpx.AsyncClient, redis: Redis) -> None:
    plaintext = text_xml("hi", msg_id=7)
    for nonce in ("a", "b", "c"):  # WeCom re-signs each retry
        query, body = post_callback(plaintext, nonce=nonce)
        assert (await client.post(f"/callback?{query}", content=body)).status_code == 200
    assert len(await entries(redis)) == 1


async def test_same_second_events_that_differ_are_all_kept(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    now = int(time.time())
    for key in ("menu_a", "menu_b"):
        xml = event_xml("click", extra=f"<EventKey><![CDATA[{key}]]></EventKey>", create_time=now)
        query, body = post_callback(xml)
        assert (await client.post(f"/callback?{query}", content=body)).status_code == 200
    assert len(await entries(redis)) == 2


async def test_redis_down_answers_503_and_the_retry_lands_once(redis: Redis) -> None:
    with EmbeddedRedis() as server:
        own = Redis.from_url(server.url, socket_timeout=2)
        app = create_app(helpers.settings(server.url), redis=own)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as c:
            query, body = post_callback(text_xml(msg_id=99))
            server.kill()
            assert (await c.post(f"/callback?{query}", content=body)).status_code == 503
            assert (await c.get("/readyz")).status_code == 503
            server.start()
            assert (await c.post(f"/callback?{query}", content=body)).status_code == 200
            assert (await c.post(f"/callback?{query}", content=body)).status_code == 200
            assert (await c.get("/readyz")).status_code == 200
        assert await own.xlen(EVENTS) == 1
        await own.aclose()


def _with(query: str, **changes: str | None) -> str:
    params = dict(pair.split("=", 1) for pair in query.split("&"))
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return "&".join(f"{k}={v}" for k, v in params.items())


def _bad_inputs() -> list[tuple[str, str, str, bytes, int]]:
    """(case, method, path+query, body, expected status)."""
    good_q, good_body = post_callback(text_xml(msg_id=5))
    cases: list[tuple[str, str, str, bytes, int]] = []

    def add(name: str, query: str, body: bytes, status: int, method: str = "POST") -> None:
        cases.append((name, method, f"/callback?{query}", body, status))

    add("bad signature", _with(good_q, msg_signature="0" * 40), good_body, 403)
    add("missing signature", _with(good_q, msg_signature=None), good_body, 400)
    add("missing timestamp", _with(good_q, timestamp=None), good_body, 400)
    add("missing nonce", _with(good_q, nonce=None), good_body, 400)
    add("repeated nonce", good_q + "&nonce=other", good_body, 400)
    add("non-numeric timestamp", _with(good_q, timestamp="abc"), good_body, 400)
    add("old timestamp (replay)", _with(good_q, timestamp="1409659813"), good_body, 403)
    add("empty body", good_q, b"", 400)
    add("10 MB body", good_q, b"<xml>" + b"A" * 10_000_000 + b"</xml>", 413)
    add("not xml", good_q, b"hello", 400)
    add("truncated xml", good_q, good_body[: len(good_body) // 2], 400)
    add("non-utf8 body", good_q, b"<xml><Encrypt>\xff\xfe</Encrypt></xml>", 400)
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><xml><Encrypt>&b;</Encrypt></xml>'
    )
    add("entity bomb envelope", good_q, bomb, 400)
    xxe = b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><Encrypt>&e;</Encrypt></xml>'
    add("external entity envelope", good_q, xxe, 400)
    add("missing Encrypt", *signed_envelope("")[:1], b"<xml><ToUserName>x</ToUserName></xml>", 400)

    def signed(name: str, encrypt: str, status: int) -> None:
        query, body = signed_envelope(encrypt)
        add(name, query, body, status)

    signed("bad base64", "not*base64!", 400)
    signed("not whole blocks", raw_encrypt(b"x" * 32)[:-8] + "AAAAAA==", 400)
    signed("wrong corp id", raw_encrypt(pkcs7_32(framed(text_xml(), b"wwOTHERcorp"))), 403)
    signed("pad byte 0", raw_encrypt(framed(text_xml()).ljust(320, b"\0")[:320]), 400)
    bad_pad = pkcs7_32(framed(text_xml()))
    signed("unequal pad bytes", raw_encrypt(bad_pad[:-2] + b"\x01" + bad_pad[-1:]), 400)
    signed("lying length field", raw_encrypt(pkcs7_32(framed(text_xml(), length=10**6))), 400)
    signed("plaintext not xml", raw_encrypt(pkcs7_32(framed(b"just text"))), 400)
    hostile = b'<!DOCTYPE x [<!ENTITY a "1">]><xml><MsgType>&a;</MsgType></xml>'
    signed("entity in plaintext", raw_encrypt(pkcs7_32(framed(hostile))), 400)
    deep = b"<xml>" + b"<a>" * 200 + b"</a>" * 200 + b"</xml>"
    signed("deep nesting", raw_encrypt(pkcs7_32(framed(deep))), 400)
    signed("non-utf8 plaintext", raw_encrypt(pkcs7_32(framed(b"<xml>\xff\xfe</xml>"))), 400)
    signed("wrong agent id", raw_encrypt(pkcs7_32(framed(text_xml(agent_id=999)))), 403)
    cases.append(("unknown app", "POST", f"/callback/nope?{good_q}", good_body, 404))
    cases.append(("wrong method", "PUT", f"/callback?{good_q}", good_body, 405))
    cases.append(("GET without echostr", "GET", f"/callback?{good_q}", b"", 400))
    verify = urlencode(
        {
            "msg_signature": "0" * 40,
            "timestamp": str(int(time.time())),
            "nonce": "1",
            "echostr": "x",
        }
    )
    cases.append(("GET bad signature", "GET", f"/callback?{verify}", b"", 403))
    return cases


BAD = _bad_inputs()


@pytest.mark.parametrize(("case", "method", "url", "body", "status"), BAD, ids=[c[0] for c in BAD])
async def test_bad_input_is_refused_and_nothing_is_published(
    client: httpx.AsyncClient,
    redis: Redis,
    case: str,
    method: str,
    url: str,
    body: bytes,
    status: int,
) -> None:
    response = await client.request(method, url, content=body)
    assert response.status_code == status, case
    assert await entries(redis) == []
    assert (await client.get("/healthz")).status_code == 200


def test_at_least_twenty_bad_input_classes() -> None:
    assert len(BAD) >= 20


async def test_refusals_and_outcomes_are_counted(client: httpx.AsyncClient) -> None:
    query, body = post_callback(text_xml(msg_id=11))
    await client.post(f"/callback?{query}", content=body)
    await client.post(f"/callback?{_with(query, msg_signature='0' * 40)}", content=body)
    text = (await client.get("/metrics")).text
    assert 'wecom_ingress_callbacks_total{app="default",outcome="stored"}' in text
    assert 'outcome="bad_signature"' in text
    assert "wecom_ingress_ack_seconds_bucket" in text
    assert "wecom_ingress_clock_skew_seconds" in text
    for secret in (TOKEN, AES_KEY):
        assert secret not in text


async def test_named_apps_have_their_own_paths(
    redis_url: str, redis: Redis, tmp_path: object
) -> None:
    from pathlib import Path

    apps = Path(str(tmp_path)) / "apps.toml"
    apps.write_text(
        f'[apps.hr]\ncorp_id = "{CORP_ID}"\nagent_id = 1000002\ntoken = "{TOKEN}"\n'
        f'encoding_aes_key = "{AES_KEY}"\n'
    )
    settings: Settings = load_settings({"REDIS_URL": redis_url, "WECOM_APPS_FILE": str(apps)})
    transport = httpx.ASGITransport(app=create_app(settings, redis=redis))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as c:
        query, body = post_callback(text_xml(msg_id=77))
        assert (await c.post(f"/callback?{query}", content=body)).status_code == 404
        assert (await c.post(f"/callback/hr?{query}", content=body)).status_code == 200
    stored = await entries(redis)
    assert [decode_envelope(e[1][b"data"]).app for e in stored] == ["hr"]


async def test_concurrent_callbacks_share_a_pipeline_and_each_gets_its_answer(
    client: httpx.AsyncClient, redis: Redis
) -> None:
    import asyncio

    posts = []
    for n in range(10):
        plaintext = text_xml(f"m{n}", msg_id=1000 + n)
        for nonce in ("x", "y"):  # each message twice, as WeCom retries
            posts.append(post_callback(plaintext, nonce=nonce))
    responses = await asyncio.gather(
        *(client.post(f"/callback?{query}", content=body) for query, body in posts)
    )
    assert [r.status_code for r in responses] == [200] * 20
    stored = await entries(redis)
    events = [decode_envelope(e[1][b"data"]).event for e in stored]
    contents = sorted(ev.content for ev in events if isinstance(ev, TextMessage))
    assert contents == sorted(f"m{n}" for n in range(10))


async def test_a_flushed_script_cache_is_reloaded(client: httpx.AsyncClient, redis: Redis) -> None:
    query, body = post_callback(text_xml(msg_id=31))
    assert (await client.post(f"/callback?{query}", content=body)).status_code == 200
    await redis.script_flush()  # as after a Redis restart
    query, body = post_callback(text_xml(msg_id=32))
    assert (await client.post(f"/callback?{query}", content=body)).status_code == 200
    assert len(await entries(redis)) == 2
