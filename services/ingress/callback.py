"""GET and POST /callback: verify, decrypt, store once, acknowledge.

POST order (DESIGN §4.1): query parameters → timestamp window → body size → envelope →
signature → decrypt → receive-id → parse → dedup + XADD in one Lua call → 200 with an empty body.
A refusal is answered with a 4xx (never a 5xx for anything a client sends), logged once with its
reason and counted; Redis unreachable is a 503 so that WeCom retries.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from services.ingress import metrics
from shared.bus import names
from shared.config import AppSettings
from shared.errors import CryptoError, ReceiveIdError, SignatureError
from shared.protocol.crypto import CallbackCrypto
from shared.protocol.parser import parse_message
from shared.schemas.envelope import EventEnvelope, encode_envelope
from shared.schemas.inbound import InboundEventType, dedup_key

log = logging.getLogger("wecom_bus.ingress")

# KEYS[1] dedup mark, KEYS[2] events stream; ARGV: mark TTL (s), MAXLEN, entry data.
# The mark and the entry commit together: a crash cannot leave one without the other.
STORE_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'data', ARGV[3])
end
return false
"""

EMPTY_OK = Response(status_code=200)


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AppReceiver:
    """Everything one app's callback path needs, built once at start."""

    app: AppSettings
    crypto: CallbackCrypto


@dataclass(frozen=True, slots=True)
class Store:
    redis: Redis
    script: AsyncScript
    events_key: str
    prefix: str
    maxlen: int
    dedup_ttl: int


def _one(request: Request, names: tuple[str, ...]) -> list[str]:
    """Each named query parameter exactly once and non-empty, else 400."""
    params = request.query_params
    values = []
    for name in names:
        got = params.getlist(name)
        if len(got) != 1 or not got[0]:
            raise Refused(400, f"{'repeated' if len(got) > 1 else 'missing'}_{name}")
        values.append(got[0])
    return values


def _check_timestamp(raw: str, max_skew: int) -> float:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise Refused(400, "malformed_timestamp")
    skew = time.time() - int(raw)
    metrics.SKEW.observe(abs(skew))
    if max_skew and abs(skew) > max_skew:
        raise Refused(403, "timestamp_outside_window")
    return skew


def _crypto_status(exc: CryptoError) -> int:
    return 403 if isinstance(exc, SignatureError | ReceiveIdError) else 400


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise Refused(400, "malformed_content_length")
        if int(length) > limit:
            raise Refused(413, "body_too_large")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise Refused(413, "body_too_large")
    except ClientDisconnect:
        raise Refused(400, "client_disconnected") from None
    return bytes(body)


def refuse(app: str, exc: Refused) -> Response:
    metrics.CALLBACKS.labels(app, exc.reason).inc()
    log.warning("callback refused", extra={"app": app, "status": exc.status, "reason": exc.reason})
    return Response(status_code=exc.status)


async def verify_url(request: Request, receiver: AppReceiver, max_skew: int) -> Response:
    """GET: WeCom's URL verification; answer the decrypted echostr as the raw body."""
    name = receiver.app.name
    try:
        signature, timestamp, nonce, echostr = _one(
            request, ("msg_signature", "timestamp", "nonce", "echostr")
        )
        _check_timestamp(timestamp, max_skew)
        try:
            echo = receiver.crypto.verify_url(signature, timestamp, nonce, echostr)
        except CryptoError as exc:
            raise Refused(_crypto_status(exc), exc.reason) from None
    except Refused as exc:
        return refuse(name, exc)
    metrics.CALLBACKS.labels(name, "verified").inc()
    log.info("url verification answered", extra={"app": name})
    return Response(echo, media_type="text/plain")


async def receive(
    request: Request, receiver: AppReceiver, store: Store, max_skew: int, max_body: int
) -> Response:
    """POST: one event stored per WeCom message, however often WeCom retries."""
    started = time.perf_counter()
    app = receiver.app
    try:
        signature, timestamp, nonce = _one(request, ("msg_signature", "timestamp", "nonce"))
        _check_timestamp(timestamp, max_skew)
        body = await _read_body(request, max_body)
        try:
            plaintext = receiver.crypto.decrypt_callback(
                signature, timestamp, nonce, body, max_bytes=max_body
            )
            event = parse_message(plaintext, max_bytes=max_body)
        except CryptoError as exc:
            raise Refused(_crypto_status(exc), exc.reason) from None
        if event.agent_id is not None and event.agent_id != app.agent_id:
            raise Refused(403, "wrong_agent_id")
    except Refused as exc:
        return refuse(app.name, exc)

    key = dedup_key(event)
    trace_id = os.urandom(8).hex()
    data = encode_envelope(
        EventEnvelope(
            app=app.name,
            received_at=time.time(),
            trace_id=trace_id,
            dedup_key=key,
            event=cast("InboundEventType", event),
        )
    )
    try:
        entry_id = await store.script(
            keys=[names.seen(store.prefix, app.name, key), store.events_key],
            args=[store.dedup_ttl, store.maxlen, data],
            client=store.redis,
        )
    except (RedisError, OSError) as exc:
        metrics.CALLBACKS.labels(app.name, "redis_unavailable").inc()
        log.error(
            "redis unavailable, answering 503 so WeCom retries",
            extra={"app": app.name, "trace_id": trace_id, "error": type(exc).__name__},
        )
        return Response(status_code=503)
    outcome = "stored" if entry_id else "duplicate"
    metrics.CALLBACKS.labels(app.name, outcome).inc()
    metrics.ACK_SECONDS.observe(time.perf_counter() - started)
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "callback " + outcome, extra={"app": app.name, "trace_id": trace_id, "dedup_key": key}
        )
    return EMPTY_OK
