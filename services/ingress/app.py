"""The ingress application: ``create_app(settings)`` wires routes, Redis and per-app crypto."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.health import health_routes
from services.ingress.callback import STORE_ONCE, AppReceiver, Store, receive, verify_url
from shared.bus import names
from shared.config import Settings, load_settings
from shared.protocol.crypto import CallbackCrypto

__all__ = ["create_app", "dedup_ttl"]


def dedup_ttl(max_skew: int) -> int:
    """Keep dedup marks longer than a replay could still pass the timestamp check."""
    return max(2 * max_skew, 3600) if max_skew else 86_400


def _receivers(settings: Settings) -> dict[str, AppReceiver]:
    settings.require("token", "encoding_aes_key")
    receivers = {}
    for name, app in settings.apps.items():
        assert app.token is not None and app.encoding_aes_key is not None
        crypto = CallbackCrypto(app.token.get(), app.encoding_aes_key.get(), app.corp_id)
        receivers[name] = AppReceiver(app=app, crypto=crypto)
    return receivers


def create_app(settings: Settings | None = None, redis: Redis | None = None) -> Starlette:
    settings = settings or load_settings()
    receivers = _receivers(settings)
    client = redis or Redis.from_url(
        settings.require_redis(), socket_timeout=2.0, socket_connect_timeout=1.0
    )
    store = Store(
        redis=client,
        script=client.register_script(STORE_ONCE),
        events_key=names.events(settings.prefix),
        prefix=settings.prefix,
        maxlen=settings.stream_maxlen,
        dedup_ttl=dedup_ttl(settings.ingress_max_clock_skew),
    )
    max_skew, max_body = settings.ingress_max_clock_skew, settings.ingress_max_body

    async def callback(request: Request) -> Response:
        name = request.path_params.get("app", "default")
        receiver = receivers.get(name)
        if receiver is None:
            return Response(status_code=404)
        if request.method == "GET":
            return await verify_url(request, receiver, max_skew)
        return await receive(request, receiver, store, max_skew, max_body)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {"settings": settings, "redis": client}
        finally:
            if redis is None:
                await client.aclose()

    return Starlette(
        routes=[
            Route("/callback", callback, methods=["GET", "POST"]),
            Route("/callback/{app}", callback, methods=["GET", "POST"]),
            *health_routes(client),
        ],
        lifespan=lifespan,
    )
