"""Proxy headers on the ingress: applied to its Starlette side (GET verification, health, bots)
from INGRESS_TRUSTED_PROXIES only; the POST receiver needs neither client nor scheme."""

from __future__ import annotations

import httpx
import pytest
from redis.asyncio import Redis

from services.ingress.app import create_app
from tests import helpers


async def redirect_scheme(redis_url: str, redis: Redis, client: str) -> str:
    """The scheme of the redirect Starlette answers for "/healthz/" (it builds the URL from the
    request's scheme), asked through a proxy that says the caller used https."""
    app = create_app(helpers.settings(redis_url, INGRESS_TRUSTED_PROXIES="10.1.2.3"), redis=redis)
    transport = httpx.ASGITransport(app=app, client=(client, 4711))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as c:
        response = await c.get("/healthz/", headers={"X-Forwarded-Proto": "https"})
    assert response.status_code in (307, 308)
    return response.headers["location"].split(":", 1)[0]


@pytest.mark.parametrize(("client", "scheme"), [("10.1.2.3", "https"), ("10.9.9.9", "http")])
async def test_forwarded_headers_count_only_from_trusted_proxies(
    redis_url: str, redis: Redis, client: str, scheme: str
) -> None:
    assert await redirect_scheme(redis_url, redis, client) == scheme
