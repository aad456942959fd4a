"""The sender's HTTP side: the internal send API plus /healthz, /readyz and /metrics.

``POST /v1/messages`` takes WeCom's own message/send JSON (``agentid`` may be left out; ``app``
names another app of the apps file), validates it as WeCom would, and answers 202 with the
request id once it is on the outbox. A repeated ``Idempotency-Key`` answers the first id and
enqueues nothing. ``GET /v1/messages/{id}`` says whether it was sent (and WeCom's msgid).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.health import health_routes
from shared.bus import names
from shared.bus.outbox import enqueue
from shared.config import Settings
from shared.errors import ConfigError, SchemaError
from shared.wecom.client import WeComClient
from shared.wecom.errors import WeComAPIError, WeComUnavailableError

__all__ = ["MAX_BODY", "create_api"]

MAX_BODY = 1_048_576  # mpnews content may be 666 KB


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
