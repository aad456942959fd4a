"""How WeComClient's JSON POSTs (message/send above all) reach qyapi: a ``Wire``.

Production's is ``shared.wecom.http1.Http1Wire`` (straight HTTP/1.1), and ``AiohttpWire``
through a proxy (``WECOM_HTTPS_PROXY``): one aiohttp session per app, the URL of each endpoint
built once per access token (the token, percent-encoded, is the whole query), the headers and
the timeouts set once on the session, the body already encoded. None of httpx's per-request
work (building a request, parsing the URL and query, auth, redirects, cookies, a response
model) is left on the send path; the httpx client still makes the other, rarer calls
(gettoken, media, the gateway's passthrough). ``HttpxWire`` posts through that httpx client
instead: the client uses it when a test hands it an httpx transport (the in-process fake
WeCom) and while tracing is on (httpx's instrumentation gives each WeCom call its span).
Either way the client does the rest the same: errcodes, the token refresh, the errors' wording.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import quote

import aiohttp
import httpx
from yarl import URL

from shared.wecom.errors import map_transport_errors, unavailable

__all__ = ["JSON_HEADERS", "AiohttpWire", "HttpxWire", "Wire"]

JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


class Wire(Protocol):
    async def post(self, endpoint: str, token: str, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` (JSON) to ``/cgi-bin/<endpoint>?access_token=<token>``: WeCom's HTTP
        status and answer; WeComUnavailableError when no answer came (the token never in it)."""
        ...

    async def aclose(self) -> None: ...


class HttpxWire:
    """Through the client's httpx.AsyncClient (base URL, headers, timeouts are its)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def post(self, endpoint: str, token: str, body: bytes) -> tuple[int, bytes]:
        with map_transport_errors(endpoint):
            response = await self._http.post(
                f"/cgi-bin/{endpoint}",
                params={"access_token": token},
                content=body,
                headers=JSON_HEADERS,
            )
        return response.status_code, response.content

    async def aclose(self) -> None:
        """Nothing: the client closes its httpx.AsyncClient."""


def client_timeout(timeout: httpx.Timeout) -> aiohttp.ClientTimeout:
    """httpx's timeouts in aiohttp's terms: ``pool`` bounds the wait for a connection (and the
    connecting), ``connect`` the connecting, ``read`` each read of the answer."""
    return aiohttp.ClientTimeout(
        total=None, connect=timeout.pool, sock_connect=timeout.connect, sock_read=timeout.read
    )


class AiohttpWire:
    """aiohttp directly: one session (opened at the first post), ``limits.max_connections``
    connections at most, through ``proxy`` when given (CONNECT for https, absolute-form
    requests for http)."""

    def __init__(
        self,
        base_url: str,
        *,
        limits: httpx.Limits,
        timeout: httpx.Timeout,
        proxy: str | None,
        user_agent: str,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._limits, self._timeout, self._proxy = limits, client_timeout(timeout), proxy
        self._headers = {"User-Agent": user_agent, **JSON_HEADERS}
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, tuple[str, URL]] = {}  # endpoint -> (token, its URL)

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry or 5.0,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            timeout=self._timeout,
            cookie_jar=aiohttp.DummyCookieJar(),  # WeCom sets none; nothing to keep
        )
        return self._session

    def _url(self, endpoint: str, token: str) -> URL:
        known = self._urls.get(endpoint)
        if known is not None and known[0] == token:
            return known[1]
        url = URL(f"{self._base}/cgi-bin/{endpoint}?access_token={quote(token, safe='')}")
        self._urls[endpoint] = (token, url)
        return url

    async def post(self, endpoint: str, token: str, body: bytes) -> tuple[int, bytes]:
        session = self._session or self._open()
        try:
            url = self._url(endpoint, token)
            async with session.post(url, data=body, proxy=self._proxy) as response:
                return response.status, await response.read()
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors too
            raise unavailable(endpoint, exc, timed_out=True) from None
        except aiohttp.ClientError as exc:
            raise unavailable(endpoint, exc, timed_out=False) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
