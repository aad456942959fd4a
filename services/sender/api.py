"""The sender's HTTP side: the internal send API plus /healthz, /readyz and /metrics.

Endpoints (all need ``Authorization: Bearer <SENDER_API_KEY>``; the API is off without a key):

    POST /v1/messages                WeCom's message/send JSON → 202 {"id"} once on the outbox
    GET  /v1/messages/{id}           404, or its state: queued, delayed, sent, dead
    POST /v1/recall                  {"msgid"} → message/recall
    POST /v1/template_card/update    WeCom's update_template_card JSON → its answer
    POST /v1/media?type=&app=        multipart field ``media`` → {"media_id"}
    GET|POST /v1/wecom/{path}        WeCom's other APIs, allowlisted (services.sender.gateway)

Every body is validated as WeCom would before anything is sent; ``app`` (body or query) names an
app of the apps file. One error map covers the whole API (``exception_handlers``): a refusal is
a 4xx naming the field, never a 5xx, except what is not the client's doing: Redis unreachable
503, WeCom refusing 502 (its errcode and advice), WeCom unreachable 504.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.health import health_routes
from shared.bus import sendstate
from shared.bus.outbox import enqueue
from shared.config import Settings
from shared.errors import ConfigError, SchemaError
from shared.schemas.cards import UpdateTemplateCardRequest
from shared.schemas.outbound import RecallRequest, decode_request, encode_send_request
from shared.wecom.client import MEDIA_MAX, WeComClient, check_media
from shared.wecom.errors import WeComAPIError, WeComUnavailableError

__all__ = ["MAX_BODY", "ApiError", "create_api"]

MAX_BODY = 1_048_576  # mpnews content may be 666 KB
_MULTIPART_SLACK = 64 * 1024  # room for the multipart headers around the file


class ApiError(Exception):
    """A refusal with its HTTP status; ``field`` names what to fix."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers


class _Target(msgspec.Struct):
    app: Any = "default"


# --- the one error map ------------------------------------------------------------------------


def _error(status: int, message: str, field: str | None = None, **headers: str) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status, headers=headers or None)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error(exc.status, exc.message, exc.field, **(exc.headers or {}))


async def _schema_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SchemaError)
    return _error(422, exc.problem, exc.field)


async def _config_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConfigError)
    return _error(422, exc.problem, "$.app")


async def _redis_down(request: Request, exc: Exception) -> Response:
    return _error(503, "Redis unreachable; nothing was done, retry")


async def _wecom_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WeComAPIError)
    body = {"errcode": exc.errcode, "errmsg": exc.errmsg, "advice": exc.advice}
    return JSONResponse(body, status_code=502)


async def _wecom_away(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, WeComUnavailableError)
    return _error(504, str(exc))


EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Any]] = {
    ApiError: _api_error,
    SchemaError: _schema_error,
    ConfigError: _config_error,
    RedisError: _redis_down,
    ConnectionError: _redis_down,
    WeComAPIError: _wecom_refused,
    WeComUnavailableError: _wecom_away,
}


# --- what every endpoint does first -----------------------------------------------------------


def _authorize(request: Request) -> None:
    """The one auth check: 404 while the API is off, 401 without a bearer key, 403 wrong."""
    settings: Settings = request.app.state.settings
    if settings.sender_api_key is None:
        raise ApiError(404, "the send API is off (SENDER_API_KEY is not set)")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(401, "missing bearer key", headers={"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.encode(), settings.sender_api_key.get().encode()):
        raise ApiError(403, "wrong key")


async def _body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, refused with 413 past ``limit`` (declared or streamed)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise ApiError(413, f"body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"body larger than {limit} bytes")
    return bytes(body)


def _client(request: Request, name: object) -> WeComClient:
    if not isinstance(name, str):
        raise SchemaError("$.app", "must be a string naming an app")
    request.app.state.settings.app(name)  # ConfigError (422 $.app) for an unknown app
    clients: Mapping[str, WeComClient] = request.app.state.clients
    if name not in clients:
        raise ConfigError("app", f"app {name!r} has no WeCom client in this sender")
    return clients[name]


def _app_of(body: bytes) -> object:
    try:
        return msgspec.json.decode(body, type=_Target).app
    except msgspec.ValidationError:
        raise SchemaError("$", "must be a JSON object") from None
    except msgspec.DecodeError:
        raise SchemaError("$", "is not valid JSON") from None


# --- endpoints --------------------------------------------------------------------------------


async def post_message(request: Request) -> Response:
    _authorize(request)
    body = await _body(request)
    request_id = await enqueue(
        request.app.state.redis,
        request.app.state.settings,
        body,
        origin="api",
        idempotency_key=request.headers.get("idempotency-key"),
    )
    return JSONResponse({"id": request_id}, status_code=202)


async def get_message(request: Request) -> Response:
    _authorize(request)
    request_id = request.path_params["id"]
    state = await sendstate.read(
        request.app.state.redis, request.app.state.settings.prefix, request_id
    )
    if state is None:
        raise ApiError(404, "no request with this id was accepted (or it is older than 7 days)")
    return Response(msgspec.json.encode(state), media_type="application/json")


async def recall(request: Request) -> Response:
    _authorize(request)
    body = await _body(request)
    client = _client(request, _app_of(body))
    req = decode_request(body, RecallRequest)
    await client.recall(req.msgid)
    return JSONResponse({"errcode": 0})


async def update_card(request: Request) -> Response:
    _authorize(request)
    body = await _body(request)
    client = _client(request, _app_of(body))
    req = decode_request(body, UpdateTemplateCardRequest)
    if req.agentid is not None and req.agentid != client.app.agent_id:
        raise SchemaError("$.agentid", f"is not app {client.app.name!r}'s AgentId")
    result = await client.update_template_card(encode_send_request(req))
    return JSONResponse({"errcode": 0, "invaliduser": result.invaliduser})


async def upload(request: Request) -> Response:
    """Upload temporary media (multipart field ``media``; valid 3 days) → media_id."""
    _authorize(request)
    kind = request.query_params.get("type", "")
    client = _client(request, request.query_params.get("app", "default"))
    if kind not in MEDIA_MAX:
        raise SchemaError("type", f"must be one of {', '.join(MEDIA_MAX)}")
    length = request.headers.get("content-length", "")
    if not length.isdigit():
        raise ApiError(411, "a Content-Length is required")
    if int(length) > MEDIA_MAX[kind] + _MULTIPART_SLACK:
        raise ApiError(413, f"a {kind} may be at most {MEDIA_MAX[kind]} bytes")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise SchemaError("media", "send the file as multipart/form-data, field 'media'")
    async with request.form(max_files=1, max_fields=2) as form:
        media = form.get("media")
        if not isinstance(media, UploadFile):
            raise SchemaError("media", "a file part named 'media' is required")
        content = await media.read()
        filename = media.filename or "upload"
        content_type = media.content_type or "application/octet-stream"
    check_media(kind, content)
    media_id = await client.upload_media(kind, filename, content, content_type)
    return JSONResponse({"media_id": media_id})


def create_api(
    settings: Settings,
    redis: Redis,
    *,
    clients: Mapping[str, WeComClient],
    ready: Callable[[], bool] = lambda: True,
) -> Starlette:
    """The API app; its resources (settings, Redis, the apps' clients) live in ``app.state``,
    opened and closed by the sender that owns them."""
    from services.sender import gateway  # it uses this module's auth check and error map

    app = Starlette(
        routes=[
            Route("/v1/messages", post_message, methods=["POST"]),
            Route("/v1/messages/{id}", get_message, methods=["GET"]),
            Route("/v1/recall", recall, methods=["POST"]),
            Route("/v1/media", upload, methods=["POST"]),
            Route("/v1/template_card/update", update_card, methods=["POST"]),
            *gateway.ROUTES,
            *health_routes(redis, ready),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.settings = settings
    app.state.redis = redis
    app.state.clients = clients
    return app
