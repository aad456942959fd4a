"""Egress through a forward proxy (WECOM_HTTPS_PROXY): every WeCom call of the sender's client
goes through it, shown with a real proxy on 127.0.0.1 in front of the real fake WeCom server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from devkit.fakewecom import FakeApp, FakeConfig, create_app
from shared.config import AppSettings, Secret
from shared.wecom.client import WeComClient
from shared.wecom.token import TokenCache
from tests import helpers
from tests.test_fakewecom import Servers


class ForwardProxy:
    """A few lines of HTTP forward proxy: absolute-form requests and CONNECT tunnels. It
    notes each request line it forwarded (``seen``), which is how the test knows the route."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._forward(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line, *headers = head.decode("latin-1").split("\r\n")
        method, target, version = line.split(" ")
        self.seen.append(f"{method} {target}")
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            return
        sizes = [int(h.split(":")[1]) for h in headers if h.lower().startswith("content-length")]
        body = await reader.readexactly(sizes[0] if sizes else 0)
        url = urlsplit(target)
        kept = [h for h in headers if h and not h.lower().startswith(("connection", "proxy-"))]
        request = [f"{method} {url.path}?{url.query} {version}", *kept, "Connection: close"]
        up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port)
        try:
            up_writer.write("\r\n".join(request).encode("latin-1") + b"\r\n\r\n" + body)
            writer.write(await up_reader.read())  # the whole answer: the upstream closes
            await writer.drain()
        finally:
            up_writer.close()
            await up_writer.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def fake_url() -> AsyncIterator[str]:
    app = AppSettings(
        name="default",
        corp_id=helpers.CORP_ID,
        agent_id=helpers.AGENT_ID,
        secret=Secret(helpers.SECRET),
        token=Secret(helpers.TOKEN),
        encoding_aes_key=Secret(helpers.AES_KEY),
    )
    servers = Servers()
    try:
        yield await servers.start(create_app(FakeConfig(apps=(FakeApp.from_settings(app, None),))))
    finally:
        await servers.stop()


def client(redis: Redis, base: str, proxy: str | None) -> WeComClient:
    app = helpers.settings("redis://unused").app()
    return WeComClient(
        app,
        token_source=lambda fetch: TokenCache(
            redis, fetch, corp_id=app.corp_id, agent_id=app.agent_id, name=app.name
        ),
        base_url=base,
        proxy=proxy,
    )


async def test_every_wecom_call_goes_through_the_proxy(redis: Redis, fake_url: str) -> None:
    proxy = ForwardProxy()
    proxy_url = await proxy.start()
    try:
        async with client(redis, fake_url, proxy_url) as wecom:
            assert (await wecom.agent())["agentid"] == helpers.AGENT_ID
            answer = await wecom.call("GET", "user/get", params={"userid": "alice"})
            assert answer.json()["name"] == "Alice"
            # message/send: aiohttp directly (shared.wecom.wire), through the same proxy
            sent = await wecom.send(
                {"touser": "alice", "msgtype": "text", "text": {"content": "hi"}}
            )
            assert sent.msgid
    finally:
        await proxy.stop()
    paths = [urlsplit(line.split(" ")[1]).path for line in proxy.seen]
    assert paths == [
        "/cgi-bin/gettoken",
        "/cgi-bin/agent/get",
        "/cgi-bin/user/get",
        "/cgi-bin/message/send",
    ]
    assert all(line.startswith(f"GET {fake_url}/") for line in proxy.seen[:3])
    assert proxy.seen[3].startswith(f"POST {fake_url}/cgi-bin/message/send?access_token=")


async def test_without_a_proxy_nothing_goes_through_one(redis: Redis, fake_url: str) -> None:
    proxy = ForwardProxy()
    await proxy.start()
    try:
        async with client(redis, fake_url, None) as wecom:
            await wecom.agent()
            await wecom.send({"touser": "alice", "msgtype": "text", "text": {"content": "hi"}})
    finally:
        await proxy.stop()
    assert proxy.seen == []
