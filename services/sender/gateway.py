"""The sender's gateway to WeCom: ``GET|POST /v1/wecom/{path}`` for the apps' other APIs.

Behaviours hold no token, by design; through the gateway they read the directory, download
media and call whatever else ``SENDER_GATEWAY_APIS`` allows (default: reads only). A call
passes, in order: the bearer key (the send API's, 401/403), the path (400 unless like
``user/get``), the allowlist (403 naming the variable; nothing reaches WeCom), the app
(``X-WeCom-App``, default ``default``; 422 unknown), then the corp's budget for that API.

WeCom lets one corp call one API at most 10,000 times a minute and 150,000 an hour; past that it
blocks the API (45009) for a minute or an hour. The gateway counts calls per corp and API in
fixed minute and hour windows in Redis, shared by every sender replica, and answers 429 with
``Retry-After`` (the seconds left in the full window) once ``SENDER_GATEWAY_PER_MINUTE`` (9,000)
or ``SENDER_GATEWAY_PER_HOUR`` (140,000) is reached, leaving WeCom's margin to the corp's other
callers. The query and the JSON body go to WeCom as they are, with the app's access token added;
WeCom's JSON answer comes back as is (errcode included) and ``media/get`` answers the file with
WeCom's Content-Type and Content-Disposition (file name), at most 20 MB.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.sender.api import ApiError, _authorize, _body
from services.sender.metrics import GATEWAY_CALLS, GATEWAY_SECONDS
from shared.bus import names
from shared.bus.scripts import Script
from shared.config import Settings
from shared.wecom.client import TooLargeError, WeComClient
from shared.wecom.errors import WeComUnavailableError
from shared.wecom.media import MEDIA_MAX

__all__ = ["ROUTES", "admit"]

_PATH = re.compile(r"[a-z0-9_]+(?:/[a-z0-9_]+)*")
JSON_LIMIT = 4 << 20  # user/list answers can be large; anything larger is not a read we pass
MEDIA_LIMIT = max(MEDIA_MAX.values())  # 20 MB: the largest temporary media WeCom stores
_PASSED_HEADERS = ("content-type", "content-disposition")

# KEYS[1] the minute counter, KEYS[2] the hour counter (one corp, one API: same hash tag);
# ARGV: minute limit, hour limit, minute TTL, hour TTL. 0: admitted and counted, 1 or 2: the
# minute or the hour is full (nothing counted).
_ADMIT = Script("""
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then return 1 end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[2]) then return 2 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 0
""")


async def admit(request: Request, corp_id: str, api: str, now: float | None = None) -> None:
    """Count one call of ``corp_id`` to ``api``; ApiError 429 (Retry-After) when it is over."""
    settings: Settings = request.app.state.settings
    now = time.time() if now is None else now
    minute, hour = int(now // 60), int(now // 3600)
    keys = [
        names.gateway_rate(settings.prefix, corp_id, api, f"m{minute}"),
        names.gateway_rate(settings.prefix, corp_id, api, f"h{hour}"),
    ]
    limits = [settings.gateway_per_minute, settings.gateway_per_hour, 120, 7200]
    full = int(await _ADMIT(request.app.state.redis, keys, limits))
    if full:
        end = (minute + 1) * 60 if full == 1 else (hour + 1) * 3600
        variable = "SENDER_GATEWAY_PER_MINUTE" if full == 1 else "SENDER_GATEWAY_PER_HOUR"
        raise ApiError(
            429,
            f"{api}: this corp's budget for the API is used up ({variable}); WeCom would block it",
            headers={"Retry-After": str(max(1, int(end - now + 0.999)))},
        )


def _path(request: Request) -> str:
    path: str = request.path_params["path"]
    if len(path) > 100 or not _PATH.fullmatch(path):
        raise ApiError(400, "the path must be a WeCom API path like user/get ([a-z0-9_/])", "path")
    settings: Settings = request.app.state.settings
    if path not in settings.gateway_apis:
        raise ApiError(403, f"{path} is not in SENDER_GATEWAY_APIS; nothing was sent to WeCom")
    return path


def _app_client(request: Request) -> WeComClient:
    name = request.headers.get("x-wecom-app", "default")
    clients: Mapping[str, WeComClient] = request.app.state.clients
    if name not in clients:
        raise ApiError(422, f"no app {name!r} in this sender", "X-WeCom-App")
    return clients[name]


async def _json_body(request: Request) -> bytes:
    body = await _body(request, JSON_LIMIT)
    try:
        msgspec.json.decode(body, type=dict[str, object])
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise ApiError(422, "the body must be a JSON object", "$") from None
    return body


def _outcome(content: bytes, content_type: str) -> str:
    """The metric's outcome: WeCom's errcode (\"0\" for a file)."""
    if not content.startswith(b"{") or not ("json" in content_type or "text" in content_type):
        return "0"  # a file
    try:
        answer = msgspec.json.decode(content, type=dict[str, object])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "unavailable"
    return str(answer.get("errcode", 0))


async def call(request: Request) -> Response:
    """Pass one call through to ``cgi-bin/{path}`` with the app's token."""
    _authorize(request)
    api = _path(request)
    client = _app_client(request)
    labels = (client.app.name, api)
    body = await _json_body(request) if request.method == "POST" else None
    try:
        await admit(request, client.app.corp_id, api)
    except ApiError:
        GATEWAY_CALLS.labels(*labels, "limited").inc()
        raise
    params = {k: v for k, v in request.query_params.items() if k != "access_token"}
    started = time.perf_counter()
    try:
        answer = await client.call(
            request.method,
            api,
            params=params,
            body=body,
            limit=MEDIA_LIMIT if api == "media/get" else JSON_LIMIT,
        )
    except WeComUnavailableError as exc:
        GATEWAY_CALLS.labels(*labels, "unavailable").inc()
        if isinstance(exc, TooLargeError):  # WeCom answered, but more than we pass on
            raise ApiError(502, f"WeCom's answer to {api} is {exc.reason}") from None
        raise
    GATEWAY_SECONDS.labels(api).observe(time.perf_counter() - started)
    if answer.status_code != 200:
        GATEWAY_CALLS.labels(*labels, "unavailable").inc()
        raise ApiError(502, f"WeCom answered {api} with HTTP {answer.status_code}")
    headers = {h: answer.headers[h] for h in _PASSED_HEADERS if h in answer.headers}
    content_type = headers.get("content-type", "application/json")
    GATEWAY_CALLS.labels(*labels, _outcome(answer.content, content_type)).inc()
    return Response(answer.content, headers=headers)


ROUTES = [Route("/v1/wecom/{path:path}", call, methods=["GET", "POST"])]
