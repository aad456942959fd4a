"""WeComClient: the qyapi HTTP calls the sender makes, one pooled client per app.

message/send and the other JSON POSTs go over a ``shared.wecom.wire.Wire`` (straight HTTP/1.1
in production, aiohttp through a proxy); the rarer calls (gettoken, media, agent/get, the
gateway's passthrough) through an httpx.AsyncClient over aiohttp.

Every authenticated call gets the access_token from a ``TokenSource`` (normally the Redis-shared
``TokenCache``), puts it in the query string as WeCom requires, and on 40014/42001/41001
invalidates exactly that token, takes a fresh one and retries the call once; a second token
failure raises. Errcodes and transport failures are translated by ``shared.wecom.errors``.

The token lives only in the request URL: httpx logs URLs at INFO on the "httpx" logger, so a
filter on that logger masks ``access_token=`` and ``corpsecret=`` (shared.logs also quiets it).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import httpx
import msgspec
from httpx_aiohttp import AiohttpTransport

from shared import __version__, tracing
from shared.errors import ConfigError, SchemaError
from shared.wecom.errors import (
    TokenInvalidError,
    WeComAPIError,
    WeComUnavailableError,
    map_transport_errors,
    payload_from,
    payload_from_response,
    raise_for_errcode,
    scrub,
)
from shared.wecom.http1 import Http1Wire
from shared.wecom.media import MEDIA_MAX, MediaKind, check_media
from shared.wecom.wire import JSON_HEADERS, AiohttpWire, HttpxWire, Wire

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "MEDIA_MAX",
    "AppCredentials",
    "MediaKind",
    "SendResult",
    "TokenFetcher",
    "TokenSource",
    "TooLargeError",
    "WeComClient",
    "check_media",
    "wecom_transport",
]

DEFAULT_BASE_URL = "https://qyapi.weixin.qq.com"
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=16)


def wecom_transport(limits: httpx.Limits, proxy: str | None) -> httpx.AsyncBaseTransport:
    """aiohttp under httpx's API (about a quarter of httpcore's CPU per request, measured with
    `python -m bench profile --target sender`). httpx ignores its own proxy settings when a
    transport is given, so ``proxy`` (WECOM_HTTPS_PROXY / HTTPS_PROXY) goes to the transport,
    which hands it to aiohttp: CONNECT for https, absolute-form requests for http."""
    return AiohttpTransport(limits=limits, proxy=httpx.Proxy(proxy) if proxy else None)


_encode = msgspec.json.Encoder().encode
_decode_body = msgspec.json.Decoder(dict[str, Any]).decode


class _Secret(Protocol):
    def get(self) -> str: ...


class AppCredentials(Protocol):
    """What the client needs of an app (``shared.config.AppSettings`` fits)."""

    @property
    def name(self) -> str: ...
    @property
    def corp_id(self) -> str: ...
    @property
    def agent_id(self) -> int: ...
    @property
    def secret(self) -> _Secret | None: ...


@runtime_checkable
class TokenSource(Protocol):
    """Hands out access tokens; ``TokenCache`` is the production one."""

    async def get(self) -> str: ...

    async def invalidate(self, failed: str) -> None:
        """Forget ``failed`` (only if it is still the current token)."""
        ...


TokenFetcher = Callable[[], Awaitable[tuple[str, int]]]


class SendResult(msgspec.Struct, frozen=True, kw_only=True):
    """WeCom's answer to message/send (and update_template_card): ids and refused recipients."""

    msgid: str = ""
    response_code: str = ""
    invaliduser: list[str] = msgspec.field(default_factory=list)
    invalidparty: list[str] = msgspec.field(default_factory=list)
    invalidtag: list[str] = msgspec.field(default_factory=list)
    unlicenseduser: list[str] = msgspec.field(default_factory=list)

    @property
    def partial(self) -> bool:
        """True when WeCom delivered to some recipients but listed others as refused."""
        return bool(self.invaliduser or self.invalidparty or self.invalidtag or self.unlicenseduser)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> SendResult:
        return cls(
            msgid=str(payload.get("msgid") or ""),
            response_code=str(payload.get("response_code") or ""),
            invaliduser=_ids(payload.get("invaliduser")),
            invalidparty=_ids(payload.get("invalidparty")),
            invalidtag=_ids(payload.get("invalidtag")),
            unlicenseduser=_ids(payload.get("unlicenseduser")),
        )


def _as_dict(body: bytes | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(body, bytes | bytearray):
        try:
            return _decode_body(body)
        except msgspec.DecodeError:
            raise SchemaError("$", "the body is not a JSON object") from None
    return dict(body)


def _ids(value: object) -> list[str]:
    # WeCom joins ids with "|" ("u1|u2"); some answers use JSON lists of ints or strings.
    if isinstance(value, str):
        return [part for part in value.split("|") if part]
    if isinstance(value, list):
        return [str(part) for part in value if str(part)]
    return []


class TooLargeError(WeComUnavailableError):
    """WeCom's answer (a media file) is larger than the caller accepts."""


_TRANSFER_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def _answer(response: httpx.Response, content: bytes) -> httpx.Response:
    """A read answer holding ``content`` (decoded), its status and WeCom's other headers."""
    headers = [(k, v) for k, v in response.headers.items() if k.lower() not in _TRANSFER_HEADERS]
    return httpx.Response(
        response.status_code, headers=headers, content=content, request=response.request
    )


def _token_refused(response: httpx.Response) -> bool:
    """Whether WeCom's answer is a token errcode (40014, 42001, 41001)."""
    if response.status_code != 200 or not response.content.startswith(b"{"):
        return False
    try:
        raise_for_errcode(_decode_body(response.content))
    except TokenInvalidError:
        return True
    except (WeComAPIError, WeComUnavailableError, msgspec.DecodeError):
        return False
    return False


class _RedactURLs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(scrub(str(a)) if isinstance(a, httpx.URL) else a for a in args)
        record.msg = scrub(str(record.msg))
        return True


def _install_log_filter() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactURLs) for f in logger.filters):
        logger.addFilter(_RedactURLs())


_install_log_filter()


class _State(enum.Enum):
    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


class WeComClient:
    """One app's qyapi client; use ``async with`` (or call ``aclose()``); closed means closed.

    ``token_source`` is a TokenSource, or a factory called once with this client's
    ``gettoken`` (the cache needs the client to fetch, the client needs the cache)::

        client = WeComClient(app, token_source=lambda fetch: TokenCache(redis, fetch, ...))
    """

    def __init__(
        self,
        app: AppCredentials,
        *,
        token_source: TokenSource | Callable[[TokenFetcher], TokenSource],
        base_url: str = DEFAULT_BASE_URL,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
        proxy: str | None = None,
    ) -> None:
        self.app = app
        agent = f"wecom-bus/{__version__}"
        self._http = httpx.AsyncClient(
            base_url=base_url,
            transport=transport or wecom_transport(limits, proxy),  # tests pass the fake's
            timeout=timeout,
            limits=limits,
            headers={"User-Agent": agent},
        )
        tracing.instrument_http(self._http)  # a span per WeCom call while tracing
        # JSON POSTs (message/send…): straight over HTTP/1.1, through a proxy over aiohttp,
        # and through httpx when a test hands us the fake's transport or tracing wants httpx's
        # span per call (shared.wecom.wire).
        self._wire: Wire
        if transport is not None or tracing.enabled():
            self._wire = HttpxWire(self._http)
        elif proxy:
            self._wire = AiohttpWire(
                base_url, limits=limits, timeout=timeout, proxy=proxy, user_agent=agent
            )
        else:
            self._wire = Http1Wire(base_url, limits=limits, timeout=timeout, user_agent=agent)
        self._state = _State.UNOPENED
        self.tokens: TokenSource = (
            token_source if isinstance(token_source, TokenSource) else token_source(self.gettoken)
        )

    def __repr__(self) -> str:
        return f"<WeComClient app={self.app.name!r} agent_id={self.app.agent_id}>"

    async def __aenter__(self) -> Self:
        if self._state is not _State.UNOPENED:
            raise RuntimeError("a WeComClient can be opened only once; create a new one")
        self._state = _State.OPENED
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._state = _State.CLOSED
        await self._wire.aclose()
        await self._http.aclose()

    def _ensure_open(self) -> None:
        if self._state is _State.CLOSED:
            raise RuntimeError("this WeComClient is closed; create a new one")

    async def gettoken(self) -> tuple[str, int]:
        """Call gettoken once: ``(access_token, expires_in)``. TokenCache decides when."""
        self._ensure_open()
        if self.app.secret is None:
            raise ConfigError("WECOM_SECRET", f"not set for app {self.app.name!r}")
        params = {"corpid": self.app.corp_id, "corpsecret": self.app.secret.get()}
        with map_transport_errors("gettoken"):
            response = await self._http.get("/cgi-bin/gettoken", params=params)
        payload = payload_from_response(response, "gettoken")
        token, expires_in = payload.get("access_token"), payload.get("expires_in", 7200)
        if not isinstance(token, str) or not token or not isinstance(expires_in, int):
            raise WeComUnavailableError("gettoken", "answer lacks access_token or expires_in")
        return token, expires_in

    async def send(self, body: bytes | Mapping[str, Any]) -> SendResult:
        """POST message/send. ``agentid`` is filled in when absent (never on a
        miniprogram_notice, which carries none); partial failures are listed in the result,
        a total failure (81013…) raises."""
        data = _as_dict(body)
        if data.get("msgtype") == "miniprogram_notice":
            data.pop("agentid", None)
        else:
            data = self._with_agentid(data)
        payload = await self._post_json("message/send", data)
        return SendResult.from_payload(payload)

    async def upload_media(
        self, kind: str, filename: str, content: bytes, content_type: str
    ) -> str:
        """Upload temporary media (valid 3 days) as multipart field "media"; returns media_id.

        ``kind`` is a MediaKind; other strings raise SchemaError, so callers may pass input as is.
        """
        check_media(kind, content)
        files = {"media": (filename, content, content_type)}
        payload = await self._authed("POST", "media/upload", params={"type": kind}, files=files)
        media_id = payload.get("media_id")
        if not isinstance(media_id, str) or not media_id:
            raise WeComUnavailableError("media/upload", "answer lacks media_id")
        return media_id

    async def agent(self) -> dict[str, Any]:
        """GET agent/get for this app's agentid: its name, ``close`` (1: disabled) and the
        visible range. ``wecom-bus check`` uses it to catch a wrong AgentId before a send does."""
        return await self._authed("GET", "agent/get", params={"agentid": str(self.app.agent_id)})

    async def recall(self, msgid: str) -> None:
        """Recall a message sent in the last 24 hours (WeCom client copies only)."""
        await self._post_json("message/recall", {"msgid": msgid})

    async def update_template_card(self, body: bytes | Mapping[str, Any]) -> SendResult:
        """Update a sent template card by its response_code (single use, valid 72 h)."""
        payload = await self._post_json(
            "message/update_template_card", self._with_agentid(_as_dict(body))
        )
        return SendResult.from_payload(payload)

    def _with_agentid(self, data: dict[str, Any]) -> dict[str, Any]:
        agentid = data.get("agentid", self.app.agent_id)
        try:
            agentid = int(agentid)
        except (TypeError, ValueError):
            raise SchemaError("$.agentid", "must be an integer") from None
        if agentid != self.app.agent_id:
            # The token belongs to one app; WeCom would refuse another app's agentid (301002).
            raise SchemaError(
                "$.agentid", f"is {agentid} but this client sends for app {self.app.agent_id}"
            )
        data["agentid"] = agentid
        return data

    async def call(
        self,
        method: str,
        endpoint: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        limit: int = 1 << 20,
    ) -> httpx.Response:
        """Any qyapi call, WeCom's answer untouched (the gateway's passthrough): only a token
        errcode is acted on (fresh token, one retry, as for sends); other errcodes are the
        caller's to read. The body is read up to ``limit`` bytes (TooLargeError beyond), and
        the token never appears in it."""
        self._ensure_open()
        token = await self.tokens.get()
        response = await self._raw(method, endpoint, token, params, body, limit)
        if _token_refused(response):
            await self.tokens.invalidate(token)
            token = await self.tokens.get()
            response = await self._raw(method, endpoint, token, params, body, limit)
        if token.encode() in response.content:
            return _answer(response, response.content.replace(token.encode(), b"***"))
        return response

    async def _raw(
        self,
        method: str,
        endpoint: str,
        token: str,
        params: Mapping[str, str] | None,
        body: bytes | None,
        limit: int,
    ) -> httpx.Response:
        query = {**(params or {}), "access_token": token}
        headers = JSON_HEADERS if body is not None else None
        request = self._http.build_request(
            method, f"/cgi-bin/{endpoint}", params=query, content=body, headers=headers
        )
        with map_transport_errors(endpoint):
            response = await self._http.send(request, stream=True)
            try:
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():  # decoded (gzip…), then counted
                    size += len(chunk)
                    if size > limit:
                        raise TooLargeError(endpoint, f"answer larger than {limit} bytes")
                    chunks.append(chunk)
            finally:
                await response.aclose()
        return _answer(response, b"".join(chunks))

    async def _post_json(self, endpoint: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST JSON over the wire (message/send…), with the token refresh of every call."""
        content = _encode(body)

        async def post(token: str) -> dict[str, Any]:
            return payload_from(*await self._wire.post(endpoint, token, content), endpoint)

        return await self._with_token(post)

    async def _authed(self, method: str, endpoint: str, **kwargs: Any) -> dict[str, Any]:
        return await self._with_token(partial(self._request, method, endpoint, **kwargs))

    async def _with_token(self, call: Callable[[str], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """``call(token)``; when WeCom refuses the token, exactly one retry with a fresh one (a
        second token failure propagates)."""
        self._ensure_open()
        token = await self.tokens.get()
        try:
            return await call(token)
        except TokenInvalidError:
            await self.tokens.invalidate(token)
        return await call(await self.tokens.get())

    async def _request(
        self,
        method: str,
        endpoint: str,
        token: str,
        *,
        params: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        query = {**(params or {}), "access_token": token}
        with map_transport_errors(endpoint):
            response = await self._http.request(
                method, f"/cgi-bin/{endpoint}", params=query, **kwargs
            )
        return payload_from_response(response, endpoint)
