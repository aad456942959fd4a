"""``ctx.wecom``: a behaviour's door to WeCom, through the sender's gateway (no token here).

::

    user = await ctx.wecom.get("user/get", userid=msg.from_user)       # WeCom's JSON, errcode 0
    dept = await ctx.wecom.get("department/list", id=user["main_department"])
    media = await ctx.wecom.download(msg.media_id)                     # .content .content_type
    await ctx.wecom.post("user/list_id", {"limit": 100})               # .filename

The consumer finds the sender through ``SENDER_URL`` and ``SENDER_API_KEY``. An errcode other
than 0 raises the matching ``shared.wecom.errors`` class (a ``WeComAPIError`` with
``errcode`` and ``advice``: an expired media id is 40007); a refusal of the gateway itself
(path not allowed, the corp's budget for the API used up, a wrong key) raises
``GatewayRefusedError`` with its HTTP status and, for 429, ``retry_after``; the sender or WeCom
unreachable raises ``WeComUnavailableError``.

Directory reads (``user/get``, ``department/list``, ``department/get``) are cached in the
process for ``ttl`` seconds (30 by default): a member who writes five messages in a minute is
looked up once. One ``httpx.AsyncClient`` per process, opened and closed with the service
(``services.runtime.lifespan``); it never goes through a proxy (the sender is internal).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol, Self
from urllib.parse import unquote

import httpx
import msgspec

from shared.config import Settings
from shared.errors import ConfigError, WeComBusError
from shared.wecom.errors import WeComUnavailableError, raise_for_errcode

__all__ = [
    "CACHED",
    "GatewayRefusedError",
    "Media",
    "WeComGateway",
    "gateway_for",
    "gateway_of",
]

CACHED = frozenset({"user/get", "department/list", "department/get"})
_FILENAME = re.compile(r"""filename\*?=(?:UTF-8'')?"?([^";]+)"?""", re.IGNORECASE)
_decode = msgspec.json.Decoder(dict[str, Any]).decode


class GatewayRefusedError(WeComBusError):
    """The sender's gateway refused the call (nothing, or nothing more, reached WeCom)."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        self.status, self.message, self.retry_after = status, message, retry_after
        super().__init__(f"the sender's gateway answered {status}: {message}")


class Media(msgspec.Struct, frozen=True, kw_only=True):
    """A downloaded temporary media file (media/get)."""

    content: bytes
    content_type: str
    filename: str

    def __repr__(self) -> str:  # the bytes are a member's: not in logs
        return f"Media({self.filename!r}, {self.content_type!r}, {len(self.content)} bytes)"


class WeComGateway:
    """The gateway client of one consumer process; ``async with`` opens and closes it."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        app: str = "default",
        ttl: float = 30.0,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.app = app
        self.ttl = ttl
        self._http = httpx.AsyncClient(
            base_url=f"{base_url.rstrip('/')}/v1/wecom/",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(timeout, connect=3.0),
            transport=transport,
            trust_env=False,  # the sender is internal: never through HTTPS_PROXY
        )
        self._cache: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}

    def __repr__(self) -> str:
        return f"<WeComGateway {self._http.base_url} app={self.app!r}>"

    async def __aenter__(self) -> Self:
        await self._http.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def for_app(self, app: str) -> WeComGateway:
        """The same client speaking for another app of the apps file (``X-WeCom-App``)."""
        other = WeComGateway.__new__(WeComGateway)
        other.app, other.ttl, other._http, other._cache = app, self.ttl, self._http, self._cache
        return other

    async def get(self, path: str, **params: str | int) -> dict[str, Any]:
        """GET ``cgi-bin/{path}`` with ``params``; WeCom's answer (errcode 0) or the error."""
        query = {k: str(v) for k, v in params.items()}
        key = (self.app, path, msgspec.json.encode(sorted(query.items())).decode())
        hit = self._cache.get(key) if path in CACHED else None
        if hit is not None and hit[0] > time.monotonic():
            return dict(hit[1])
        answer = _json(path, await self._call("GET", path, params=query))
        if path in CACHED:
            self._cache[key] = (time.monotonic() + self.ttl, answer)
            if len(self._cache) > 10_000:  # a bounded cache: drop the oldest half
                for old in list(self._cache)[:5_000]:
                    del self._cache[old]
        return answer

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``cgi-bin/{path}`` with a JSON ``body``; WeCom's answer or the error."""
        response = await self._call("POST", path, content=msgspec.json.encode(body))
        return _json(path, response)

    async def download(self, media_id: str) -> Media:
        """media/get: the file a member sent (valid 3 days: later 40007, ``advice`` says so)."""
        response = await self._call("GET", "media/get", params={"media_id": media_id})
        content_type = response.headers.get("content-type", "application/octet-stream")
        if response.content.startswith(b"{") and ("json" in content_type or "text" in content_type):
            _json("media/get", response)  # an errcode: raises
        match = _FILENAME.search(response.headers.get("content-disposition", ""))
        filename = unquote(match.group(1)) if match else media_id[:16]
        return Media(content=response.content, content_type=content_type, filename=filename)

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"X-WeCom-App": self.app}
        if method == "POST":
            headers["Content-Type"] = "application/json"
        try:
            response = await self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise WeComUnavailableError(path, f"the sender is unreachable: {exc!r}") from None
        if response.status_code in (502, 504) or response.status_code >= 500:
            raise WeComUnavailableError(path, _message(response), status_code=response.status_code)
        if response.status_code != 200:
            retry = response.headers.get("retry-after")
            wait = float(retry) if retry and retry.isdigit() else None
            raise GatewayRefusedError(response.status_code, _message(response), wait)
        return response


def _message(response: httpx.Response) -> str:
    try:
        body = _decode(response.content)
    except msgspec.DecodeError:
        return response.text[:200]
    return str(body.get("error") or body.get("errmsg") or body)


def _json(path: str, response: httpx.Response) -> dict[str, Any]:
    try:
        answer = _decode(response.content)
    except msgspec.DecodeError:
        raise WeComUnavailableError(path, "answered with something that is not JSON") from None
    raise_for_errcode(answer, endpoint=path)
    return answer


class _HasSettings(Protocol):
    settings: Settings


@contextlib.asynccontextmanager
async def gateway_for(state: _HasSettings) -> AsyncIterator[None]:
    """Open the process's gateway client as ``state.wecom`` (when SENDER_URL and
    SENDER_API_KEY are set) for the service's life, and close it after."""
    settings = state.settings
    if settings.sender_url is None or settings.sender_api_key is None:
        yield
        return
    async with WeComGateway(settings.sender_url, settings.sender_api_key.get()) as gateway:
        state.wecom = gateway  # type: ignore[attr-defined]
        try:
            yield
        finally:
            del state.wecom  # type: ignore[attr-defined]


def gateway_of(state: object, app: str) -> WeComGateway:
    """``ctx.wecom``: the process's gateway speaking for ``app``, or ConfigError naming what
    to set."""
    gateway = vars(state).get("wecom")
    if not isinstance(gateway, WeComGateway):
        raise ConfigError(
            "SENDER_URL and SENDER_API_KEY",
            "not set: ctx.wecom reaches WeCom through the sender's gateway "
            "(e.g. SENDER_URL=http://sender:8082 and the sender's SENDER_API_KEY)",
        )
    return gateway if gateway.app == app else gateway.for_app(app)
