"""The sender's HTTP side: the internal send API plus /healthz, /readyz and /metrics.

``POST /v1/messages`` takes WeCom's own message/send JSON (``agentid`` may be left out; ``app``
names another app of the apps file), validates it as WeCom would, and answers 202 with the
request id once it is on the outbox. A repeated ``Idempotency-Key`` answers the first id and
enqueues nothing. ``GET /v1/messages/{id}`` says whether it was sent (and WeCom's msgid).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.health import health_routes
from shared.bus import names
from shared.config import Settings
from shared.errors import ConfigError, SchemaError
from shared.schemas.envelope import encode_outbox, outbox_entry
from shared.schemas.outbound import decode_send_request
from shared.wecom.client import WeComClient
from shared.wecom.errors import WeComAPIError, WeComUnavailableError

__all__ = ["MAX_BODY", "create_api", "enqueue"]

MAX_BODY = 1_048_576  # mpnews content may be 666 KB

# KEYS[1] idempotency mark, KEYS[2] outbox; ARGV: ttl, maxlen, request id, data.
# Returns the id that holds the key: ours (enqueued now) or the first request's.
ENQUEUE_ONCE = """
local first = redis.call('GET', KEYS[1])
if first then return first end
redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'data', ARGV[4])
return ARGV[3]
"""
IDEMPOTENCY_TTL = 86_400


class _Target(msgspec.Struct):
    app: str = "default"


_target = msgspec.json.Decoder(_Target)


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status)


def _wecom_error(exc: WeComAPIError | WeComUnavailableError) -> JSONResponse:
    """WeCom refused (502, with its errcode and our advice) or did not answer (504)."""
    if isinstance(exc, WeComUnavailableError):
        return _error(504, str(exc))
    return JSONResponse(
        {"errcode": exc.errcode, "errmsg": exc.errmsg, "advice": exc.advice}, status_code=502
    )


async def enqueue(
    redis: Redis,
    settings: Settings,
    body: bytes,
    *,
    origin: str,
    idempotency_key: str | None = None,
) -> str:
    """Validate a message/send body and put it on the outbox; return the request id.

    Raises SchemaError (naming the field) for what WeCom would refuse, ConfigError for an
    unknown app. Shared by the HTTP API and ``wecom-bus send``.
    """
    try:
        app_name = _target.decode(body).app
    except msgspec.ValidationError:
        raise SchemaError("$.app", "must be a string naming an app") from None
    except msgspec.DecodeError:
        raise SchemaError("$", "is not valid JSON") from None
    app = settings.app(app_name)
    request = decode_send_request(body, default_agentid=app.agent_id)
    if request.agentid is not None and request.agentid != app.agent_id:
        raise SchemaError("$.agentid", f"is not app {app_name!r}'s AgentId")
    if idempotency_key:
        digest = hashlib.sha256(f"{app_name}\0{idempotency_key}".encode()).hexdigest()
        request_id, mark = f"{origin}-{digest[:32]}", f"{settings.prefix}:idem:{digest}"
    else:
        request_id, mark = f"{origin}-{uuid.uuid4().hex}", None
    entry = outbox_entry(
        id=request_id,
        app=app_name,
        trace_id=uuid.uuid4().hex[:16],
        created_at=time.time(),
        request=request,
        origin=origin,
    )
    data = encode_outbox(entry)
    outbox = names.outbox(settings.prefix)
    if mark is None:
        await redis.xadd(outbox, {"data": data}, maxlen=settings.stream_maxlen, approximate=True)
        return request_id
    first = await redis.eval(
        ENQUEUE_ONCE, 2, mark, outbox, IDEMPOTENCY_TTL, settings.stream_maxlen, request_id, data
    )
    return first.decode() if isinstance(first, bytes) else str(first)


def create_api(
    settings: Settings,
    redis: Redis,
    *,
    clients: Mapping[str, WeComClient],
    ready: Callable[[], bool] = lambda: True,
) -> Starlette:
    key = settings.sender_api_key

    def authorize(request: Request) -> Response | None:
        if key is None:
            return _error(404, "the send API is off (SENDER_API_KEY is not set)")
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return JSONResponse(
                {"error": "missing bearer key"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(given.encode(), key.get().encode()):
            return _error(403, "wrong key")
        return None

    async def read_json(request: Request) -> bytes | Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return _error(413, f"body larger than {MAX_BODY} bytes")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _error(413, f"body larger than {MAX_BODY} bytes")
        return body

    async def post_message(request: Request) -> Response:
        if (denied := authorize(request)) is not None:
            return denied
        body = await read_json(request)
        if isinstance(body, Response):
            return body
        try:
            request_id = await enqueue(
                redis,
                settings,
                body,
                origin="api",
                idempotency_key=request.headers.get("idempotency-key"),
            )
        except SchemaError as exc:
            return _error(422, exc.problem, exc.field)
        except ConfigError as exc:
            return _error(422, exc.problem, "$.app")
        except (RedisError, OSError):
            return _error(503, "Redis unreachable; nothing was enqueued, retry")
        return JSONResponse({"id": request_id}, status_code=202)

    async def get_message(request: Request) -> Response:
        if (denied := authorize(request)) is not None:
            return denied
        request_id = request.path_params["id"]
        try:
            raw = await redis.get(names.sent(settings.prefix, request_id))
        except (RedisError, OSError):
            return _error(503, "Redis unreachable")
        if raw is None:
            return JSONResponse({"id": request_id, "status": "unknown_or_pending"})
        return JSONResponse({"id": request_id, "status": "sent", **json.loads(raw)})

    async def direct(
        request: Request, call: Callable[[WeComClient, dict[str, Any]], Awaitable[Any]]
    ) -> Response:
        """Recall and card updates go straight to WeCom: they are answered, not queued."""
        if (denied := authorize(request)) is not None:
            return denied
        body = await read_json(request)
        if isinstance(body, Response):
            return body
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise ValueError
        except ValueError:
            return _error(422, "must be a JSON object", "$")
        client = clients.get(str(payload.pop("app", "default")))
        if client is None:
            return _error(422, "unknown app", "$.app")
        try:
            result = await call(client, payload)
        except (WeComAPIError, WeComUnavailableError) as exc:
            return _wecom_error(exc)
        return JSONResponse({"errcode": 0, **(result or {})})

    async def recall(request: Request) -> Response:
        async def call(client: WeComClient, payload: dict[str, Any]) -> None:
            msgid = payload.get("msgid")
            if not isinstance(msgid, str) or not msgid:
                raise SchemaError("$.msgid", "required")
            await client.recall(msgid)

        try:
            return await direct(request, call)
        except SchemaError as exc:
            return _error(422, exc.problem, exc.field)

    async def upload(request: Request) -> Response:
        """Upload temporary media (field ``media``) for ``wecom-bus send --image``; → media_id."""
        if (denied := authorize(request)) is not None:
            return denied
        client = clients.get(request.query_params.get("app", "default"))
        kind = request.query_params.get("type", "")
        if client is None:
            return _error(422, "unknown app", "app")
        if kind not in ("image", "voice", "video", "file"):
            return _error(422, "must be image, voice, video or file", "type")
        length = request.headers.get("content-length", "")
        if not length.isdigit() or int(length) > 21 * 1024 * 1024:
            return _error(413, "media larger than 20 MB (or no Content-Length)")
        async with request.form(max_files=1, max_fields=2) as form:
            media = form.get("media")
            if media is None or isinstance(media, str):
                return _error(422, "a file part named 'media' is required", "media")
            content = await media.read()
            filename = media.filename or "upload"
            content_type = media.content_type or "application/octet-stream"
        try:
            media_id = await client.upload_media(kind, filename, content, content_type)
        except (WeComAPIError, WeComUnavailableError) as exc:
            return _wecom_error(exc)
        return JSONResponse({"media_id": media_id})

    async def update_card(request: Request) -> Response:
        async def call(client: WeComClient, payload: dict[str, Any]) -> dict[str, Any]:
            result = await client.update_template_card(payload)
            return {"invaliduser": result.invaliduser}

        return await direct(request, call)

    return Starlette(
        routes=[
            Route("/v1/messages", post_message, methods=["POST"]),
            Route("/v1/messages/{id}", get_message, methods=["GET"]),
            Route("/v1/recall", recall, methods=["POST"]),
            Route("/v1/media", upload, methods=["POST"]),
            Route("/v1/template_card/update", update_card, methods=["POST"]),
            *health_routes(redis, ready),
        ]
    )
