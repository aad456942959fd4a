"""The four receivers compared on one core, and a raw asyncio responder for the generator's ceiling.

Each factory reads the app's credentials from the WECOM_* variables, as the services do:

* ``bare_app``: Starlette answering every POST /callback with an empty 200 (the HTTP stack bound);
* ``verify_app``: Starlette that verifies and decrypts with our ``CallbackCrypto`` and answers an
  empty 200 — the work no receiver can skip;
* ``asgi_verify_app``: the same work as a plain ASGI app, written the way the ingress's POST side
  is (no framework between uvicorn and the handler): the honest bound for the ingress, which is a
  plain ASGI app too, and the CPU per callback every other figure is divided by;
* ``ingress_app``: the real ingress (``services.ingress.app.create_app``) on a real Redis;
* ``usual_app`` (``bench.usual``): FastAPI with Tencent-sample-style crypto, decrypting, parsing
  with xmltodict and encrypting a passive reply inside the request.

``serve_raw`` is not HTTP-complete: it answers each request on a connection with a fixed empty
200, doing nothing else, so the load generator, not the server, is the limit.
"""

from __future__ import annotations

import asyncio
from typing import cast
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from services.ingress.app import create_app
from shared import logs
from shared.config import load_settings
from shared.errors import CryptoError
from shared.protocol.crypto import CallbackCrypto

__all__ = ["asgi_verify_app", "bare_app", "ingress_app", "serve_raw", "verify_app"]

_EMPTY_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


def _crypto() -> CallbackCrypto:
    app = load_settings().app()
    assert app.token is not None and app.encoding_aes_key is not None
    return CallbackCrypto(app.token.get(), app.encoding_aes_key.get(), app.corp_id)


def bare_app() -> Starlette:
    async def callback(request: Request) -> Response:
        return Response(status_code=200)

    return Starlette(routes=[Route("/callback", callback, methods=["POST"])])


def verify_app() -> Starlette:
    crypto = _crypto()

    async def callback(request: Request) -> Response:
        params = request.query_params
        body = await request.body()
        try:
            crypto.decrypt_callback(
                params["msg_signature"], params["timestamp"], params["nonce"], body
            )
        except (CryptoError, KeyError):
            return Response(status_code=403)
        return Response(status_code=200)

    return Starlette(routes=[Route("/callback", callback, methods=["POST"])])


def asgi_verify_app() -> ASGIApp:
    """Verify and decrypt, nothing else, as lean as a plain ASGI app gets: 200 or 403."""
    crypto = _crypto()
    ok = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
    refused = {**ok, "status": 403}
    empty = {"type": "http.response.body", "body": b""}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: nothing to start
            return
        params = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        try:
            crypto.decrypt_callback(
                params["msg_signature"], params["timestamp"], params["nonce"], body
            )
        except (CryptoError, KeyError):
            await send(refused)
        else:
            await send(ok)
        await send(empty)

    return app


def ingress_app() -> ASGIApp:
    settings = load_settings()
    logs.configure("ingress", settings.log_level, settings.log_format)
    return create_app(settings)


class _RawResponder(asyncio.Protocol):
    __slots__ = ("buf", "transport")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while (end := buf.find(b"\r\n\r\n")) >= 0:
            head = bytes(buf[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            if len(buf) < end + 4 + length:
                return
            del buf[: end + 4 + length]
            assert self.transport is not None
            self.transport.write(_EMPTY_OK)


async def serve_raw(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_RawResponder, host, port, backlog=1024)
    async with server:
        await server.serve_forever()
