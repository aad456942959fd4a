"""The production wires of WeComClient's JSON POSTs (straight HTTP/1.1, shared.wecom.http1, and
aiohttp, which a proxy selects: shared.wecom.wire) against the project's fake WeCom as a real
server on loopback: the same answers, errcodes, token refresh and failures as the httpx path
the in-process tests drive (tests/test_wecom_client.py). Every test runs with each wire.

The server runs the very app of the ``fake_wecom`` fixture, so its fault API and its records
are the fixture's; only the client is built as production builds it (no transport).
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from shared.wecom import (
    PermanentAPIError,
    RateLimitedError,
    RetryableAPIError,
    TokenCache,
    TokenInvalidError,
    WeComAPIError,
    WeComClient,
    WeComUnavailableError,
)
from shared.wecom.client import DEFAULT_LIMITS, DEFAULT_TIMEOUT
from shared.wecom.http1 import Http1Wire
from shared.wecom.wire import AiohttpWire
from tests.inprocess_wecom import InProcessWeCom
from tests.test_fakewecom import Servers
from tests.test_wecom_client import TEXT, Tokens

SECRET_TOKEN = "AT-very-secret-token"


@pytest.fixture
async def served(fake_wecom: InProcessWeCom) -> AsyncIterator[str]:
    """The fixture's fake WeCom as a real server; its base URL."""
    servers = Servers()
    try:
        yield await servers.start(fake_wecom.app)
    finally:
        await servers.stop()


Production = Callable[..., WeComClient]


@pytest.fixture(params=["http1", "aiohttp"])
def production(request: pytest.FixtureRequest) -> Production:
    """Builds a client as production does; with "aiohttp" its wire is the one a proxy selects,
    here without the proxy (tests/test_proxy.py runs it through one)."""

    def make(fake: InProcessWeCom, base_url: str, tokens: Any, **options: Any) -> WeComClient:
        client = WeComClient(fake.settings, token_source=tokens, base_url=base_url, **options)
        assert isinstance(client._wire, Http1Wire)  # the path under test, not httpx's
        if request.param == "aiohttp":
            client._wire = AiohttpWire(
                base_url,
                limits=DEFAULT_LIMITS,
                timeout=options.get("timeout", DEFAULT_TIMEOUT),
                proxy=None,
                user_agent="wecom-bus/test",
            )
        return client

    return make


@pytest.fixture
async def client(
    fake_wecom: InProcessWeCom, served: str, tokens: Tokens, production: Production
) -> AsyncIterator[WeComClient]:
    async with production(fake_wecom, served, tokens) as c:
        yield c


@pytest.fixture
def tokens(fake_wecom: InProcessWeCom) -> Tokens:
    return Tokens(fake_wecom)


async def test_send_is_delivered_with_the_apps_agentid(
    client: WeComClient, fake_wecom: InProcessWeCom
) -> None:
    first = await client.send(TEXT)
    second = await client.send(TEXT)  # the same session and URL again
    one, two = fake_wecom.sends
    assert one.body == {**TEXT, "agentid": 1000002}
    assert (one.status, one.delivered) == ("delivered", ["zhangsan", "lisi"])
    assert (first.msgid, second.msgid) == (one.msgid, two.msgid) and first.msgid != second.msgid


@pytest.mark.parametrize(
    ("errcode", "error"),
    [
        (45009, RateLimitedError),
        (81013, PermanentAPIError),
        (-1, RetryableAPIError),
        (60020, PermanentAPIError),
    ],
)
async def test_errcodes_raise_their_class(
    errcode: int, error: type[WeComAPIError], client: WeComClient, fake_wecom: InProcessWeCom
) -> None:
    await fake_wecom.fault(errcode=errcode, path="message/send")
    with pytest.raises(WeComAPIError) as caught:
        await client.send(TEXT)
    assert type(caught.value) is error and caught.value.errcode == errcode
    assert caught.value.endpoint == "message/send"
    assert [r.errcode for r in fake_wecom.sends] == [errcode]


async def test_a_revoked_token_is_refreshed_once_and_the_send_retried_once(
    redis: Redis, fake_wecom: InProcessWeCom, served: str, production: Production
) -> None:
    def cache(fetch: Callable[[], Any]) -> TokenCache:
        return TokenCache(redis, fetch, corp_id="wwcorp", agent_id=1000002)

    async with production(fake_wecom, served, cache) as client:
        first = await client.send(TEXT)
        await fake_wecom.fault(revoke_tokens=True)
        second = await client.send(TEXT)
        third = await client.send(TEXT)
    assert len({first.msgid, second.msgid, third.msgid}) == 3
    assert fake_wecom.gettoken_calls == 2
    assert [r.errcode for r in fake_wecom.sends] == [0, 42001, 0, 0]


async def test_a_second_token_failure_raises(
    client: WeComClient, fake_wecom: InProcessWeCom, tokens: Tokens
) -> None:
    await fake_wecom.fault(errcode=40014, count=2, path="message/send")
    with pytest.raises(TokenInvalidError):
        await client.send(TEXT)
    assert [r.errcode for r in fake_wecom.sends] == [40014, 40014]
    assert len(tokens.invalidated) == 1


class Secretive:
    async def get(self) -> str:
        return SECRET_TOKEN

    async def invalidate(self, failed: str) -> None:
        raise AssertionError("a transport failure must not invalidate the token")


def _leak_free(error: BaseException) -> None:
    text = "".join(traceback.format_exception(error)) + repr(error)
    assert SECRET_TOKEN not in text


async def test_a_timeout_and_a_reset_are_unavailable_without_the_token(
    fake_wecom: InProcessWeCom, served: str, production: Production
) -> None:
    quick = httpx.Timeout(0.5, connect=0.5)
    await fake_wecom.fault(timeout=True, seconds=5, path="message/send")
    await fake_wecom.fault(reset=True, path="message/send")
    async with production(fake_wecom, served, Secretive(), timeout=quick) as client:
        with pytest.raises(WeComUnavailableError) as timed_out:
            await client.send(TEXT)
        with pytest.raises(WeComUnavailableError) as reset:
            await client.send(TEXT)
    assert "timed out" in timed_out.value.reason
    assert timed_out.value.action == reset.value.action == "backoff"
    _leak_free(timed_out.value)
    _leak_free(reset.value)


async def test_nobody_listening_and_a_non_wecom_answer_are_unavailable(
    fake_wecom: InProcessWeCom, production: Production
) -> None:
    async def proxy_page(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 4\r\n\r\nnope")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy_page, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with production(fake_wecom, f"http://127.0.0.1:{port}", Secretive()) as client:
            with pytest.raises(WeComUnavailableError) as bad_gateway:
                await client.send(TEXT)
    finally:
        server.close()
        await server.wait_closed()
    async with production(fake_wecom, f"http://127.0.0.1:{port}", Secretive()) as client:
        with pytest.raises(WeComUnavailableError) as refused:  # the port is closed now
            await client.send(TEXT)
    assert bad_gateway.value.status_code == 502
    assert refused.value.status_code is None and refused.value.endpoint == "message/send"
    _leak_free(bad_gateway.value)
    _leak_free(refused.value)


async def test_recall_goes_over_the_wire_too_and_a_closed_client_refuses(
    client: WeComClient, fake_wecom: InProcessWeCom
) -> None:
    sent = await client.send(TEXT)
    await client.recall(sent.msgid)
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client.send(TEXT)
