"""The fake WeCom application: ``create_app(config)`` serves qyapi, /fake/ controls and the chat.

Routes:
    /cgi-bin/…                      the qyapi endpoints (devkit.fakewecom.api)
    GET  /                          the chat page (static/chat.html, chat.js, chat.css)
    GET  /healthz, /readyz          liveness, for ``wecom-bus dev``
    GET  /fake/apps                 apps (no secrets) and members, for the chat page
    GET  /fake/messages?since=REV   every message/send received, with its fate
    GET  /fake/callbacks?since=REV  every callback pushed, with its attempts
    POST /fake/callbacks            push a member's message or event to the app
    POST /fake/verify               the console's URL verification handshake
    POST|GET|DELETE /fake/faults    queue, list, clear injected faults
    GET  /fake/stats                counters; DELETE /fake/reset forgets everything
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ExceptionHandler, Receive, Scope, Send

from devkit.fakewecom import api, bot, botroutes, directory
from devkit.fakewecom.answers import client_ip, error_body
from devkit.fakewecom.api import WeComRefusal
from devkit.fakewecom.callbacks import CallbackSpec, push, verify_url
from devkit.fakewecom.faults import Faults, FaultSpec, apply_fault, parse_fault
from devkit.fakewecom.state import FakeConfig, FakeState

__all__ = ["ERRORS", "ROUTES", "FakeWeCom", "create_app"]

STATIC = Path(__file__).parent / "static"
_decode_callback = msgspec.json.Decoder(CallbackSpec)


class FakeWeCom(Starlette):
    """Starlette with the fault layer in front of everything, where the raw ``send`` is seen."""

    def __init__(self, state: FakeState, faults: Faults, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fake = state
        self.faults = faults
        # What the module-level endpoints read through request.app.state; ``http`` holds the
        # callback client once made.
        self.state.fake = state
        self.state.faults = faults
        self.state.http = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/cgi-bin/"):
            api = scope["path"].removeprefix("/cgi-bin/")
            self.fake.api_calls[api] = self.fake.api_calls.get(api, 0) + 1
            spec = self.faults.take(scope["path"])
            if spec is not None:
                self.fake.faults_applied += 1
                await apply_fault(spec, scope, receive, send, self._inner, self._record_fault)
                return
        await super().__call__(scope, receive, send)

    async def _inner(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)

    def _record_fault(self, scope: Scope, body: bytes, spec: FaultSpec) -> None:
        """A message/send answered by a fault still shows in /fake/messages."""
        if scope["path"].rstrip("/") != "/cgi-bin/message/send":
            return
        query = httpx.QueryParams(scope.get("query_string", b"").decode("latin-1"))
        owner = self.fake.app_for_token(query.get("access_token"))
        kind = "reset" if spec.reset else "timeout" if spec.timeout else f"errcode {spec.errcode}"
        self.fake.new_send(
            None if isinstance(owner, int) else owner.name,
            api.parse_json(body),
            "faulted",
            errcode=spec.errcode if spec.errcode is not None else -1,
            errmsg=f"fault injected: {kind}",
        )


def _state(request: Request) -> FakeState:
    state: FakeState = request.app.state.fake
    return state


def _faults(request: Request) -> Faults:
    faults: Faults = request.app.state.faults
    return faults


def _client(request: Request) -> httpx.AsyncClient:
    """The client that pushes callbacks, made on first use so the app also works where no
    lifespan runs; trust_env=False keeps a developer's HTTP_PROXY from catching pushes."""
    holder: dict[str, httpx.AsyncClient] = request.app.state.http
    if "client" not in holder:
        holder["client"] = httpx.AsyncClient(trust_env=False)
    return holder["client"]


def _since(request: Request) -> int:
    try:
        return int(request.query_params.get("since", "0"))
    except ValueError:
        return 0


async def chat(request: Request) -> Response:
    return FileResponse(STATIC / "chat.html")


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def apps(request: Request) -> Response:
    state = _state(request)
    listed = [
        {"name": a.name, "corp_id": a.corp_id, "agent_id": a.agent_id, "url": a.callback_url}
        for a in state.apps.values()
    ]
    return JSONResponse(
        {"apps": listed, "members": state.members, "unlicensed": sorted(state.unlicensed)}
    )


async def messages(request: Request) -> Response:
    state, since, app = _state(request), _since(request), request.query_params.get("app")
    found = [r.to_json() for r in state.sends if r.rev > since and app in (None, r.app)]
    return JSONResponse({"messages": found, "last": state.rev})


async def list_media(request: Request) -> Response:
    """The files the fake keeps (uploads and members' images), newest last, without bytes."""
    fields = ("media_id", "app", "type", "filename", "size", "created_at", "content_type")
    found = [{f: getattr(m, f) for f in fields} for m in _state(request).media.values()]
    return JSONResponse({"media": found})


async def list_callbacks(request: Request) -> Response:
    state, since = _state(request), _since(request)
    found = [r.to_json() for r in state.callbacks if r.rev > since]
    return JSONResponse({"callbacks": found, "last": state.rev})


async def push_callback(request: Request) -> Response:
    state = _state(request)
    spec = _decode_callback.decode(await request.body())
    if (problem := spec.problem()) is not None:
        raise HTTPException(400, problem)
    target = state.apps.get(spec.app)
    if target is None:
        raise HTTPException(404, f"unknown app {spec.app!r}")
    if target.callback_url is None:
        raise HTTPException(409, f"app {spec.app!r} has no callback URL")
    record = await push(state, _client(request), spec)
    return JSONResponse(record.to_json())


async def verify(request: Request) -> Response:
    state = _state(request)
    body = msgspec.json.decode(await request.body() or b"{}", type=dict[str, Any])
    target = state.apps.get(str(body.get("app", "default")))
    if target is None or target.callback_url is None:
        return JSONResponse({"ok": False, "detail": "unknown app or no callback URL"}, 404)
    try:
        timeout = float(body.get("timeout", state.config.verify_timeout))
    except (TypeError, ValueError):
        raise HTTPException(400, "timeout must be a number of seconds") from None
    return JSONResponse(await verify_url(target, _client(request), timeout))


async def list_faults(request: Request) -> Response:
    return JSONResponse({"faults": [f.to_json() for f in _faults(request).pending]})


async def clear_faults(request: Request) -> Response:
    faults = _faults(request)
    cleared = len(faults.pending)
    faults.clear()
    return JSONResponse({"ok": True, "cleared": cleared})


async def add_fault(request: Request) -> Response:
    try:
        spec = parse_fault(await request.body())
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    if spec.revoke_tokens:
        return JSONResponse({"ok": True, "revoked": _state(request).revoke_tokens()})
    return JSONResponse({"ok": True, "fault": _faults(request).add(spec).to_json()})


async def stats(request: Request) -> Response:
    return JSONResponse(
        {**_state(request).stats(), "faults_pending": len(_faults(request).pending)}
    )


async def reset(request: Request) -> Response:
    _state(request).reset()
    _faults(request).clear()
    return JSONResponse({"ok": True})


# ------------------------------------------------------------------ the one error map


async def _refused(request: Request, exc: Exception) -> Response:
    """qyapi refusals: HTTP 200 with WeCom's errcode and errmsg, a refused send recorded."""
    assert isinstance(exc, WeComRefusal)
    answer = error_body(exc.errcode, client_ip(request.client), exc.detail or None)
    if exc.is_send:
        _state(request).new_send(
            exc.app, exc.send_body, "rejected", errcode=exc.errcode, errmsg=answer["errmsg"]
        )
    return JSONResponse(answer)


async def _bad_request(request: Request, exc: Exception) -> Response:
    """Control API input that does not decode: 400 naming the problem."""
    return JSONResponse({"error": str(exc)}, status_code=400)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


ERRORS: dict[Any, ExceptionHandler] = {
    WeComRefusal: _refused,
    msgspec.ValidationError: _bad_request,
    msgspec.DecodeError: _bad_request,
    HTTPException: _http_error,
}

ROUTES = [
    *api.ROUTES,
    Route("/", chat, methods=["GET"]),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", healthz, methods=["GET"]),
    Route("/fake/apps", apps, methods=["GET"]),
    Route("/fake/messages", messages, methods=["GET"]),
    Route("/fake/callbacks", list_callbacks, methods=["GET"]),
    Route("/fake/media", list_media, methods=["GET"]),
    Route("/fake/callbacks", push_callback, methods=["POST"]),
    Route("/fake/verify", verify, methods=["POST"]),
    Route("/fake/faults", list_faults, methods=["GET"]),
    Route("/fake/faults", add_fault, methods=["POST"]),
    Route("/fake/faults", clear_faults, methods=["DELETE"]),
    Route("/fake/stats", stats, methods=["GET"]),
    Route("/fake/reset", reset, methods=["DELETE", "POST"]),
    *botroutes.ROUTES,  # AI bots (智能机器人): devkit/fakewecom/bot.py
    *directory.ROUTES,
    directory.UNKNOWN,  # last: any other /cgi-bin/ path is refused as WeCom does
]


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    try:
        yield
    finally:
        if "client" in app.state.http:
            await app.state.http.pop("client").aclose()
        await app.state.bots.aclose()


def create_app(config: FakeConfig, bots: bot.FakeBots | None = None) -> FakeWeCom:
    """A fresh fake WeCom (a Starlette app) serving ``config`` (and AI ``bots``, if any);
    its state is ``app.fake``."""
    state = FakeState(config)
    app = FakeWeCom(state, Faults(), routes=ROUTES, exception_handlers=ERRORS, lifespan=_lifespan)
    app.state.fake = state
    app.state.faults = app.faults
    app.state.http = {}
    app.state.bots = bots if bots is not None else bot.FakeBots({})
    return app
