"""The console's Starlette app: routes, login, the error pages, static files.

Resources (settings, Redis, the ``Access`` policy) live in ``app.state``; the process that owns
them opens and closes them (``services.console.__main__``). One error map turns every refusal
into a short HTML page with its 4xx, and Redis being away into a 503.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.console import deadletters, views
from services.console.auth import COOKIE, Access, guarded
from services.console.html import html
from services.console.layout import View, language
from services.health import health_routes
from shared.config import Settings

__all__ = ["STATIC", "create_app"]

STATIC = Path(__file__).parent / "static"


def _safe_next(target: str) -> str:
    """Only a path of this site (no //host, no backslash tricks) is a place to go back to."""
    ok = target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if ok else "/"


def _login_page(request: Request, problem: str = "", status: int = 200) -> Response:
    view = View(language(request), "", "/login")
    body = html(
        '<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<title>{title}</title><link rel="stylesheet" href="/static/console.css"></head>'
        '<body class="login"><main><h1>{title}</h1><p class="error">{problem}</p>'
        '<form method="post" action="/login"><input type="hidden" name="next" value="{next}">'
        '<label>{key} <input type="password" name="key" autocomplete="current-password" '
        'autofocus required></label><button type="submit">{login}</button></form>'
        '<p class="langs"><a href="?lang=en">EN</a> · <a href="?lang=zh">中文</a></p>'
        "</main></body></html>",
        lang=view.lang,
        title=view.t("title"),
        problem=problem,
        next=_safe_next(request.query_params.get("next", "/")),
        key=view.t("key"),
        login=view.t("login"),
    )
    return HTMLResponse(body, status_code=status)


async def login(request: Request) -> Response:
    access: Access = request.app.state.access
    if not access.required:
        return RedirectResponse("/", status_code=303)
    if request.method == "GET":
        return _login_page(request)
    form = await request.form()
    given, target = form.get("key"), form.get("next")
    if not isinstance(given, str) or not access.key_matches(given):
        view = View(language(request), "", "/login")
        return _login_page(request, view.t("wrong_key"), status=403)
    response = RedirectResponse(_safe_next(str(target or "/")), status_code=303)
    access.set_cookie(request, response, access.issue())
    return response


async def logout(request: Request, view: View) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 401 and request.method == "GET":
        query = urlencode({"next": request.url.path})
        return RedirectResponse(f"/login?{query}", status_code=303)
    body = html(
        '<!doctype html><html><head><meta charset="utf-8"><title>{code}</title>'
        '<link rel="stylesheet" href="/static/console.css"></head><body><main class="error">'
        '<h1>{code}</h1><p class="detail">{detail}</p><p><a href="/">←</a></p>'
        "</main></body></html>",
        code=exc.status_code,
        detail=exc.detail,
    )
    return HTMLResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _redis_down(request: Request, exc: Exception) -> Response:
    return await _http_error(request, HTTPException(503, "Redis unreachable; try again"))


EXCEPTION_HANDLERS: dict[Any, Any] = {
    HTTPException: _http_error,
    RedisError: _redis_down,
    ConnectionError: _redis_down,
}


# Pages show message contents and carry buttons: no framing (clickjacking), no caching, no
# scripts or styles from anywhere else, no Referer with a dead-letter id to other sites.
_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class SecureHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], *_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


def create_app(settings: Settings, redis: Redis, access: Access) -> Starlette:
    app = Starlette(
        routes=[
            Route("/", guarded(views.overview)),
            Route("/deadletters", guarded(deadletters.listing)),
            Route("/deadletters/act", guarded(deadletters.act), methods=["POST"]),
            Route("/deadletters/{id}", guarded(deadletters.detail)),
            Route("/sends", guarded(views.sends)),
            Route("/token", guarded(views.token)),
            Route("/login", login, methods=["GET", "POST"]),
            Route("/logout", guarded(logout), methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            *health_routes(redis),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[Middleware(SecureHeaders)],
    )
    app.state.settings = settings
    app.state.redis = redis
    app.state.access = access
    return app
