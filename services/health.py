"""/healthz, /readyz and /metrics, the same on every service."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

__all__ = ["health_routes"]


def health_routes(redis: Redis, ready: Callable[[], bool] = lambda: True) -> list[Route]:
    """``/healthz``: the process answers. ``/readyz``: Redis answers and ``ready()`` holds
    (the consumer runs and, with a ``Supervisor``, no background task waits for a restart)."""

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        try:
            await redis.ping()
        except (RedisError, OSError):
            return PlainTextResponse("redis unreachable", status_code=503)
        if not ready():
            return PlainTextResponse(
                "not ready: the consumer or a background task is down", status_code=503
            )
        return PlainTextResponse("ready")

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
