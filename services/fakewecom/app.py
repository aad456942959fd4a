"""The fake WeCom application: ``create_app(config)`` serves qyapi, /fake/ controls and the chat.

Routes:
    /cgi-bin/…                      the qyapi endpoints (services.fakewecom.api)
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
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from services.fakewecom import api
from services.fakewecom.callbacks import CallbackSpec, push, verify_url
from services.fakewecom.faults import Faults, FaultSpec, apply_fault, parse_fault
from services.fakewecom.state import FakeConfig, FakeState

__all__ = ["FakeWeCom", "create_app"]

STATIC = Path(__file__).parent / "static"
_decode_callback = msgspec.json.Decoder(CallbackSpec)


class FakeWeCom(Starlette):
    """Starlette with the fault layer in front of everything, where the raw ``send`` is seen."""

    def __init__(self, state: FakeState, faults: Faults, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fake = state
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/cgi-bin/"):
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


def _since(request: Request) -> int:
    try:
        return int(request.query_params.get("since", "0"))
    except ValueError:
        return 0


def create_app(config: FakeConfig) -> FakeWeCom:
    """A fresh fake WeCom (a Starlette app) serving ``config``; its state is ``app.fake``."""
    state = FakeState(config)
    faults = Faults()
    holder: dict[str, httpx.AsyncClient] = {}

    def client() -> httpx.AsyncClient:
        # Lazily, so the app also works where no lifespan runs; trust_env=False keeps a
        # developer's HTTP_PROXY from catching pushes to 127.0.0.1.
        if "client" not in holder:
            holder["client"] = httpx.AsyncClient(trust_env=False)
        return holder["client"]

    async def chat(request: Request) -> Response:
        return FileResponse(STATIC / "chat.html")

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def apps(request: Request) -> Response:
        listed = [
            {"name": a.name, "corp_id": a.corp_id, "agent_id": a.agent_id, "url": a.callback_url}
            for a in state.apps.values()
        ]
        return JSONResponse(
            {"apps": listed, "members": state.members, "unlicensed": sorted(state.unlicensed)}
        )

    async def messages(request: Request) -> Response:
        since, app = _since(request), request.query_params.get("app")
        found = [r.to_json() for r in state.sends if r.rev > since and app in (None, r.app)]
        return JSONResponse({"messages": found, "last": state.rev})

    async def callbacks(request: Request) -> Response:
        if request.method == "GET":
            since = _since(request)
            found = [r.to_json() for r in state.callbacks if r.rev > since]
            return JSONResponse({"callbacks": found, "last": state.rev})
        try:
            spec = _decode_callback.decode(await request.body())
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if (problem := spec.problem()) is not None:
            return JSONResponse({"error": problem}, status_code=400)
        target = state.apps.get(spec.app)
        if target is None:
            return JSONResponse({"error": f"unknown app {spec.app!r}"}, status_code=404)
        if target.callback_url is None:
            return JSONResponse({"error": f"app {spec.app!r} has no callback URL"}, status_code=409)
        record = await push(state, client(), spec)
        return JSONResponse(record.to_json())

    async def verify(request: Request) -> Response:
        try:
            body = msgspec.json.decode(await request.body() or b"{}", type=dict[str, Any])
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        target = state.apps.get(str(body.get("app", "default")))
        if target is None or target.callback_url is None:
            return JSONResponse({"ok": False, "detail": "unknown app or no callback URL"}, 404)
        timeout = float(body.get("timeout", config.verify_timeout))
        return JSONResponse(await verify_url(target, client(), timeout))

    async def fault_control(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse({"faults": [f.to_json() for f in faults.pending]})
        if request.method == "DELETE":
            cleared = len(faults.pending)
            faults.clear()
            return JSONResponse({"ok": True, "cleared": cleared})
        try:
            spec = parse_fault(await request.body())
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if spec.revoke_tokens:
            return JSONResponse({"ok": True, "revoked": state.revoke_tokens()})
        return JSONResponse({"ok": True, "fault": faults.add(spec).to_json()})

    async def stats(request: Request) -> Response:
        return JSONResponse({**state.stats(), "faults_pending": len(faults.pending)})

    async def reset(request: Request) -> Response:
        state.reset()
        faults.clear()
        return JSONResponse({"ok": True})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if "client" in holder:
                await holder.pop("client").aclose()

    routes = [
        *api.routes(state),
        Route("/", chat, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", healthz, methods=["GET"]),
        Route("/fake/apps", apps, methods=["GET"]),
        Route("/fake/messages", messages, methods=["GET"]),
        Route("/fake/callbacks", callbacks, methods=["GET", "POST"]),
        Route("/fake/verify", verify, methods=["POST"]),
        Route("/fake/faults", fault_control, methods=["GET", "POST", "DELETE"]),
        Route("/fake/stats", stats, methods=["GET"]),
        Route("/fake/reset", reset, methods=["DELETE", "POST"]),
    ]
    return FakeWeCom(state, faults, routes=routes, lifespan=lifespan)
