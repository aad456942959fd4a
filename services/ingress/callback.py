"""GET and POST /callback[/<app>]: verify, decrypt, store once, acknowledge.

POST order: query parameters → timestamp window → body size → envelope → signature → decrypt →
receive-id → parse → dedup + XADD in one Lua call → 200 with an empty body. A refusal is
answered with a 4xx (never a 5xx for anything a client sends), logged once with its reason and
counted; Redis unreachable is a 503 so that WeCom retries.

Once signature, decryption, receive-id and size pass, the message is WeCom's and is stored
whatever its type or shape (a 微信客服 event without FromUserName, a type nobody models): WeCom
drops a callback after three failed retries. What may still be refused is plaintext that is not
XML the parser accepts, and an AgentID that names another app (the operator's contract: one
URL per app).

POST is the hot path, so it is a plain ASGI app (``Receiver``) in front of Starlette: it reads
the query string and the body itself and answers with two ``send`` calls. GET (the URL
verification the admin console makes on "save") is an ordinary Starlette endpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import parse_qsl

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from services.ingress import metrics
from services.ingress.store import Store
from shared.bus.partitions import event_member
from shared.bus.tally import Tally
from shared.config import AppSettings
from shared.errors import CryptoError, ReceiveIdError, SignatureError
from shared.protocol.crypto import CallbackCrypto
from shared.protocol.parser import read_message
from shared.schemas.envelope import EventEnvelope, encode_envelope
from shared.schemas.inbound import InboundEventType, dedup_key
from shared.tracing import ids, span

__all__ = ["AppReceiver", "Receiver", "foreign_agent_id", "verify_url"]

log = logging.getLogger("wecom_bus.ingress")

POST_PARAMS = ("msg_signature", "timestamp", "nonce")
GET_PARAMS = (*POST_PARAMS, "echostr")
_NO_BODY = [(b"content-length", b"0")]


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AppReceiver:
    """Everything one app's callback path needs, built once at start."""

    app: AppSettings
    crypto: CallbackCrypto
    stored: metrics.CounterChild  # pre-bound label children: no lookup per request
    duplicate: metrics.CounterChild

    @classmethod
    def build(cls, app: AppSettings) -> AppReceiver:
        assert app.token is not None and app.encoding_aes_key is not None
        return cls(
            app=app,
            crypto=CallbackCrypto(app.token.get(), app.encoding_aes_key.get(), app.corp_id),
            stored=metrics.CALLBACKS.labels(app.name, "stored"),
            duplicate=metrics.CALLBACKS.labels(app.name, "duplicate"),
        )


def _one(pairs: list[tuple[str, str]], wanted: tuple[str, ...]) -> list[str]:
    """Each wanted query parameter exactly once and non-empty, else 400."""
    found: dict[str, list[str]] = {}
    for key, value in pairs:
        if key in wanted:
            found.setdefault(key, []).append(value)
    values = []
    for name in wanted:
        got = found.get(name, [])
        if len(got) != 1 or not got[0]:
            raise Refused(400, f"{'repeated' if len(got) > 1 else 'missing'}_{name}")
        values.append(got[0])
    return values


def _query(raw: bytes) -> list[tuple[str, str]]:
    """The query string's pairs as ``parse_qsl(..., keep_blank_values=True)`` reads them; WeCom's
    (hex signature, digits, a plain nonce) need no unquoting, so they skip its machinery."""
    query = raw.decode("latin-1")
    if "%" in query or "+" in query:
        return parse_qsl(query, keep_blank_values=True)
    return [(name, value) for name, _, value in (p.partition("=") for p in query.split("&") if p)]


def _check_timestamp(raw: str, max_skew: int) -> None:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise Refused(400, "malformed_timestamp")
    skew = abs(time.time() - int(raw))
    metrics.SKEW.observe(skew)
    if max_skew and skew > max_skew:
        raise Refused(403, "timestamp_outside_window")


def foreign_agent_id(agent_id: object, ours: int) -> bool:
    """An AgentID in the message (any copy of it) that is not ``ours``; absent or empty is not."""
    for value in agent_id if type(agent_id) is list else [agent_id]:
        if value is None:
            continue
        text = value.strip() if type(value) is str else ""
        if not (text.isascii() and text.isdigit() and len(text) < 20 and int(text) == ours):
            return True
    return False


def _crypto_status(exc: CryptoError) -> int:
    return 403 if isinstance(exc, SignatureError | ReceiveIdError) else 400


def _refused(app: str, exc: Refused) -> int:
    metrics.CALLBACKS.labels(app, exc.reason).inc()
    log.warning("callback refused", extra={"app": app, "status": exc.status, "reason": exc.reason})
    return exc.status


async def verify_url(request: Request, receiver: AppReceiver, max_skew: int) -> Response:
    """GET: WeCom's URL verification; answer the decrypted echostr as the raw body."""
    name = receiver.app.name
    try:
        signature, timestamp, nonce, echostr = _one(request.query_params.multi_items(), GET_PARAMS)
        _check_timestamp(timestamp, max_skew)
        try:
            echo = receiver.crypto.verify_url(signature, timestamp, nonce, echostr)
        except CryptoError as exc:
            raise Refused(_crypto_status(exc), exc.reason) from None
    except Refused as exc:
        return Response(status_code=_refused(name, exc))
    metrics.CALLBACKS.labels(name, "verified").inc()
    log.info("url verification answered", extra={"app": name})
    return Response(echo, media_type="text/plain")


class Receiver:
    """The POST side as a plain ASGI app: one event stored per WeCom message."""

    def __init__(
        self,
        receivers: Mapping[str, AppReceiver],
        store: Store,
        *,
        max_skew: int,
        max_body: int,
        tally: Tally | None = None,
    ) -> None:
        self.receivers = receivers
        self.store = store
        self.tally = tally if tally is not None else Tally("callbacks")  # for the console
        self.max_skew = max_skew
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        receiver = self.receivers.get(path[10:] if path.startswith("/callback/") else "default")
        if receiver is None:
            status = 404
        else:
            with span("ingress.callback", {"wecom_bus.app": receiver.app.name}, kind="server") as s:
                status = await self._receive(scope, receive, receiver)
                s.set_attribute("http.response.status_code", status)
        await send({"type": "http.response.start", "status": status, "headers": _NO_BODY})
        await send({"type": "http.response.body", "body": b""})

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        for key, value in scope["headers"]:
            if key == b"content-length":
                if not value.isdigit():
                    raise Refused(400, "malformed_content_length")
                if int(value) > self.max_body:
                    raise Refused(413, "body_too_large")
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refused(400, "client_disconnected")
            chunk: bytes = message.get("body", b"")
            body += chunk
            if len(body) > self.max_body:
                raise Refused(413, "body_too_large")
            if not message.get("more_body", False):
                return body

    async def _receive(self, scope: Scope, receive: Receive, receiver: AppReceiver) -> int:
        started = time.perf_counter()
        app = receiver.app
        try:
            signature, timestamp, nonce = _one(_query(scope["query_string"]), POST_PARAMS)
            _check_timestamp(timestamp, self.max_skew)
            body = await self._read_body(scope, receive)
            try:
                with span("ingress.verify"):
                    plaintext = receiver.crypto.decrypt_callback(
                        signature, timestamp, nonce, body, max_bytes=self.max_body
                    )
                    event, raw = read_message(plaintext, max_bytes=self.max_body)
            except CryptoError as exc:
                raise Refused(_crypto_status(exc), exc.reason) from None
            if foreign_agent_id(raw.get("AgentID"), app.agent_id):
                raise Refused(403, "wrong_agent_id")
        except Refused as exc:
            return _refused(app.name, exc)

        key = dedup_key(event, raw)
        trace_id, traceparent = ids()  # the trace's id while tracing, else a random one
        envelope = EventEnvelope(
            app=app.name,
            received_at=time.time(),
            trace_id=trace_id,
            dedup_key=key,
            event=cast("InboundEventType", event),
            raw=raw,
            traceparent=traceparent,
        )
        try:
            member = event_member(raw)
            with span("ingress.store", {"wecom_bus.msg_type": type(event).__name__}):
                entry_id = await self.store.once(app.name, key, encode_envelope(envelope), member)
        except (RedisError, OSError) as exc:
            metrics.CALLBACKS.labels(app.name, "redis_unavailable").inc()
            log.error(
                "redis unavailable, answering 503 so WeCom retries",
                extra={"app": app.name, "trace_id": trace_id, "error": type(exc).__name__},
            )
            return 503
        (receiver.stored if entry_id else receiver.duplicate).inc()
        took = time.perf_counter() - started
        metrics.ACK_SECONDS.observe(took)
        self.tally.ack(app.name, "stored" if entry_id else "duplicate", took)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "callback stored" if entry_id else "duplicate callback",
                extra={"app": app.name, "trace_id": trace_id, "dedup_key": key},
            )
        return 200
