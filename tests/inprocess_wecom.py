"""The project's fake WeCom, in-process: the real app behind an ``httpx.ASGITransport``.

Unit tests that need a WeCom use this instead of a hand-written stand-in, so there is one fake:
the same code ``wecom-bus dev`` and the end-to-end tests run as a server. Faults go through the
fake's own fault API (``POST /fake/faults``). The transport records every request a client made,
so a test can look at what went over the wire.

Under ASGITransport there is no socket: the fake's ``timeout`` and ``reset`` faults need a real
server (they do work in tests/test_fakewecom.py and the end-to-end tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from devkit.fakewecom import FakeApp, FakeConfig, FakeState, FakeWeCom, create_app
from devkit.fakewecom.state import SendRecord
from shared.config import AppSettings, Secret
from shared.protocol.crypto import generate_encoding_aes_key, generate_token

__all__ = ["BASE_URL", "InProcessWeCom"]

BASE_URL = "http://fake-wecom.test"
CORP_ID = "wwcorp"
AGENT_ID = 1000002
SECRET = "corp-s3cret"


class _Recording(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, seen: list[httpx.Request]) -> None:
        self.inner = inner
        self.seen = seen

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()  # so a test can read .content after the call
        self.seen.append(request)
        return await self.inner.handle_async_request(request)


class InProcessWeCom:
    """One fresh fake WeCom with one app (``settings``) and the members tests address."""

    def __init__(
        self,
        *,
        members: tuple[str, ...] = ("zhangsan", "lisi", "alice", "bob"),
        clock: Callable[[], float] | None = None,
        **config: Any,
    ) -> None:
        self.settings = AppSettings(
            name="default", corp_id=CORP_ID, agent_id=AGENT_ID, secret=Secret(SECRET)
        )
        fake_app = FakeApp(
            name="default",
            corp_id=CORP_ID,
            agent_id=AGENT_ID,
            secret=Secret(SECRET),
            token=Secret(generate_token()),
            encoding_aes_key=Secret(generate_encoding_aes_key()),
        )
        if clock is not None:
            config["clock"] = clock
        self.app: FakeWeCom = create_app(FakeConfig(apps=(fake_app,), members=members, **config))
        self.state: FakeState = self.app.fake
        self.requests: list[httpx.Request] = []
        self.transport = _Recording(httpx.ASGITransport(app=self.app), self.requests)
        self.base_url = BASE_URL

    def client(self) -> httpx.AsyncClient:
        """A plain client on the fake (controls, or qyapi by hand); the caller closes it."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE_URL)

    async def fault(self, **spec: Any) -> dict[str, Any]:
        """Queue a fault through the fake's fault API (errcode, delay, revoke_tokens, ...)."""
        async with self.client() as http:
            answer = await http.post("/fake/faults", json=spec)
        answer.raise_for_status()
        result: dict[str, Any] = answer.json()
        return result

    def calls(self, endpoint: str) -> list[httpx.Request]:
        """The requests made to ``/cgi-bin/<endpoint>``, oldest first."""
        return [r for r in self.requests if r.url.path == f"/cgi-bin/{endpoint}"]

    def token(self) -> str:
        """The app's current access_token, as gettoken would hand it out (counted as a call)."""
        token = self.state.get_token(CORP_ID, SECRET)
        assert not isinstance(token, int), token
        return token.value

    @property
    def sends(self) -> list[SendRecord]:
        return self.state.sends

    @property
    def gettoken_calls(self) -> int:
        return self.state.gettoken_calls["default"]

    async def aclose(self) -> None:
        client: httpx.AsyncClient | None = self.app.state.http.pop("client", None)
        if client is not None:
            await client.aclose()
