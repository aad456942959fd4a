"""The ingress application: ``create_app(settings)`` wires routes, Redis and per-app crypto.

POST /callback[/<app>] goes straight to the ``Receiver`` (a plain ASGI app, the hot path);
everything else (GET verification, health, metrics, AI bots, 404/405) goes through Starlette.

Proxy headers (``X-Forwarded-For``/``-Proto`` from ``INGRESS_TRUSTED_PROXIES`` only) are applied
to the Starlette side alone: the POST receiver reads neither the client address nor the scheme,
and uvicorn's middleware in front of everything cost a trust check per callback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from services.health import health_routes
from services.ingress.bot import bot_routes
from services.ingress.callback import AppReceiver, Receiver, verify_url
from services.ingress.store import Store
from shared.bus.tally import Tally
from shared.config import Settings, load_settings
from shared.connection import connect, prepare

__all__ = ["IngressApp", "create_app", "dedup_ttl"]


def dedup_ttl(max_skew: int) -> int:
    """Keep dedup marks longer than a replay could still pass the timestamp check."""
    return max(2 * max_skew, 3600) if max_skew else 86_400


def create_app(settings: Settings | None = None, redis: Redis | None = None) -> IngressApp:
    settings = settings or load_settings()
    settings.require("token", "encoding_aes_key")
    receivers = {name: AppReceiver.build(app) for name, app in settings.apps.items()}
    client = redis or connect(
        settings.require_redis(), socket_timeout=2.0, socket_connect_timeout=1.0
    )
    wait = (settings.min_replicas, settings.min_replicas_timeout) if settings.min_replicas else None
    max_skew = settings.ingress_max_clock_skew
    tally = Tally("callbacks")
    post = Receiver(
        receivers,
        Store(
            client,
            prefix=settings.prefix,
            maxlen=settings.stream_maxlen,
            dedup_ttl=dedup_ttl(max_skew),
            partitions=settings.partitions,
            wait=wait,
        ),
        max_skew=max_skew,
        max_body=settings.ingress_max_body,
        tally=tally,
    )

    async def verify(request: Request) -> Response:
        receiver = receivers.get(request.path_params.get("app", "default"))
        if receiver is None:
            return Response(status_code=404)
        return await verify_url(request, receiver, max_skew)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        await prepare(client)
        stop = asyncio.Event()  # per-minute counters for the console, flushed every 5 s
        counters = asyncio.create_task(tally.run(client, settings.prefix, stop))
        try:
            yield {"settings": settings, "redis": client}
        finally:
            stop.set()
            await counters
            if redis is None:
                await client.aclose()

    # POST is listed so that other methods get 405; the Receiver answers every POST itself.
    rest = Starlette(
        routes=[
            Route("/callback", verify, methods=["GET", "POST"]),
            Route("/callback/{app}", verify, methods=["GET", "POST"]),
            *health_routes(client),
        ],
        lifespan=lifespan,
    )
    # AI bots (智能机器人): GET|POST /bot/<name> of WECOM_BOTS_FILE, see services/ingress/bot.py
    rest.router.routes.extend(bot_routes(settings, client, dedup_ttl=dedup_ttl(max_skew)))
    return IngressApp(post, rest, settings.ingress_trusted_proxies)


class IngressApp:
    """The ingress's ASGI app: POST /callback[/<app>] straight to the receiver, everything
    else to the Starlette side (``rest``), behind proxy headers."""

    def __init__(self, post: ASGIApp, rest: Starlette, trusted_proxies: str) -> None:
        self.post, self.rest = post, rest
        # uvicorn types its middleware with its own ASGI types; Starlette's are the same.
        middleware = ProxyHeadersMiddleware(cast(Any, rest), trusted_hosts=trusted_proxies)
        self._proxied = cast(ASGIApp, middleware)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path == "/callback" or path.startswith("/callback/"):
                await self.post(scope, receive, send)
                return
        await self._proxied(scope, receive, send)
