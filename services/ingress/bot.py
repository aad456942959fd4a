"""GET and POST /bot/<name>: the callbacks of WeCom AI bots (智能机器人), see docs/aibot.md.

GET is the URL verification. POST is verified, decrypted and parsed like an app callback (same
query parameters, clock window, body limit and 4xx refusals), then answered at once with an
encrypted passive reply:

* a message is stored on the events stream once per msgid, together with the state of the
  stream that will carry its answer (one script call), and answered with that stream as it
  stands: empty and unfinished the first time, its current text on a repeated delivery;
* a stream refresh poll is answered from the stream's state alone (one Redis read, the bus is
  never touched); an unknown or expired stream gets a finished stream with ``expired_text``;
* enter_chat is stored and answered with the bot's welcome text (empty body when it has none);
* other events and unknown types are stored whole and answered with an empty body.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from services.ingress import metrics
from services.ingress.callback import (
    GET_PARAMS,
    POST_PARAMS,
    Refused,
    _check_timestamp,
    _crypto_status,
    _one,
    _refused,
)
from shared.aibot.config import BotSettings
from shared.aibot.streams import STORE_MESSAGE, BotStreams, StreamState, stream_id_for
from shared.bus import names
from shared.bus.partitions import index as partition_index
from shared.bus.partitions import prefix_for
from shared.config import Settings
from shared.errors import CryptoError
from shared.protocol.aibot import decrypt_bot_callback, encrypt_bot_reply, parse_bot_callback
from shared.protocol.aibot_reply import stream_reply, text_reply
from shared.protocol.crypto import CallbackCrypto
from shared.schemas.aibot import (
    BotCallbackType,
    BotEnterChat,
    BotEnvelope,
    BotMessage,
    BotStreamRefresh,
    encode_bot_envelope,
)

__all__ = ["BotEndpoint", "BotReceiver", "bot_routes", "dedup_key"]

log = logging.getLogger("wecom_bus.ingress.bot")

_PLAIN_MSGID = re.compile(r"[A-Za-z0-9+/=_.-]{1,128}")
# What stream_id_for makes, and with partitions the member's partition after it (``…p3``).
_STREAM_ID = re.compile(r"[0-9a-f]{32}(?:p(?P<partition>[0-9]{1,4}))?")


@dataclass(frozen=True, slots=True)
class BotReceiver:
    """One bot's settings and crypto, built once at start."""

    bot: BotSettings
    crypto: CallbackCrypto

    @property
    def label(self) -> str:
        return f"bot:{self.bot.name}"

    @classmethod
    def build(cls, bot: BotSettings) -> BotReceiver:
        crypto = CallbackCrypto(bot.token.get(), bot.encoding_aes_key.get(), bot.receive_id)
        return cls(bot=bot, crypto=crypto)


def dedup_key(msgid: str) -> str:
    """``msgid`` itself when it is short plain text (it usually is), else its digest."""
    if _PLAIN_MSGID.fullmatch(msgid):
        return msgid
    return "sha256:" + hashlib.sha256(msgid.encode()).hexdigest()


class _Reply:
    """Encrypts a passive reply with the callback's own timestamp and nonce (path/101033)."""

    def __init__(self, receiver: BotReceiver, timestamp: str, nonce: str) -> None:
        self.crypto, self.timestamp, self.nonce = receiver.crypto, timestamp, nonce

    def __call__(self, plaintext: bytes) -> Response:
        body = encrypt_bot_reply(self.crypto, plaintext, self.timestamp, self.nonce)
        return Response(body, media_type="application/json")


class BotEndpoint:
    """The Starlette endpoint of every bot's callback URL."""

    def __init__(
        self,
        receivers: Mapping[str, BotReceiver],
        redis: Redis,
        *,
        prefix: str,
        partitions: int = 1,
        maxlen: int,
        dedup_ttl: int,
        max_skew: int,
        max_body: int,
    ) -> None:
        self.receivers = receivers
        self.redis = redis
        self.prefix = prefix
        self.partitions = partitions
        self.maxlen = maxlen
        self.dedup_ttl = dedup_ttl
        self.max_skew = max_skew
        self.max_body = max_body

    async def handle(self, request: Request) -> Response:
        receiver = self.receivers.get(request.path_params["name"])
        if receiver is None:
            return Response(status_code=404)
        try:
            if request.method == "GET":
                return self._verify(request, receiver)
            return await self._receive(request, receiver)
        except Refused as exc:
            return Response(status_code=_refused(receiver.label, exc))
        except (RedisError, OSError) as exc:
            metrics.CALLBACKS.labels(receiver.label, "redis_unavailable").inc()
            log.error(
                "redis unavailable, answering 503 so WeCom retries",
                extra={"app": receiver.label, "error": type(exc).__name__},
            )
            return Response(status_code=503)

    def _verify(self, request: Request, receiver: BotReceiver) -> Response:
        signature, timestamp, nonce, echostr = _one(request.query_params.multi_items(), GET_PARAMS)
        _check_timestamp(timestamp, self.max_skew)
        try:
            echo = receiver.crypto.verify_url(signature, timestamp, nonce, echostr)
        except CryptoError as exc:
            raise Refused(_crypto_status(exc), exc.reason) from None
        metrics.CALLBACKS.labels(receiver.label, "verified").inc()
        log.info("url verification answered", extra={"app": receiver.label})
        return Response(echo, media_type="text/plain")

    async def _read_body(self, request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and not length.isdigit():
            raise Refused(400, "malformed_content_length")
        if length is not None and int(length) > self.max_body:
            raise Refused(413, "body_too_large")
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > self.max_body:
                    raise Refused(413, "body_too_large")
        except ClientDisconnect:
            raise Refused(400, "client_disconnected") from None
        return bytes(body)

    async def _receive(self, request: Request, receiver: BotReceiver) -> Response:
        signature, timestamp, nonce = _one(request.query_params.multi_items(), POST_PARAMS)
        _check_timestamp(timestamp, self.max_skew)
        body = await self._read_body(request)
        received_at = time.time()
        try:
            plaintext = decrypt_bot_callback(
                receiver.crypto, signature, timestamp, nonce, body, max_bytes=self.max_body
            )
            callback = parse_bot_callback(
                plaintext, max_bytes=self.max_body, received_at=received_at
            )
        except CryptoError as exc:
            raise Refused(_crypto_status(exc), exc.reason) from None
        reply = _Reply(receiver, timestamp, nonce)
        if isinstance(callback, BotStreamRefresh):
            return reply(await self._poll(receiver.bot, callback.stream.id))
        state = await self._store(receiver, callback, received_at)
        if isinstance(callback, BotMessage):
            stream_id = self._stream_id(receiver, callback)
            return reply(self._answer(receiver.bot, stream_id, state))
        if isinstance(callback, BotEnterChat) and receiver.bot.welcome:
            return reply(text_reply(receiver.bot.welcome))
        return Response(status_code=200)

    async def _store(
        self, receiver: BotReceiver, callback: BotCallbackType, received_at: float
    ) -> StreamState | None:
        """Dedup + events entry (+ a message's stream state) in one call → the stream state."""
        bot = receiver.bot
        is_message = isinstance(callback, BotMessage)
        stream_id = self._stream_id(receiver, callback) if is_message else ""
        part = self._partition(receiver, callback)
        key = dedup_key(callback.msgid)
        trace_id = os.urandom(8).hex()
        envelope = BotEnvelope(
            app=receiver.label,
            received_at=received_at,
            trace_id=trace_id,
            dedup_key=key,
            event=callback,
            bot=bot.name,
            stream_id=stream_id,
        )
        keys = [names.bot_seen(part, bot.name, key), names.events(part)]
        if is_message:
            keys.append(names.bot_stream(part, bot.name, stream_id))
        entry_id, text, finished, started = await STORE_MESSAGE(
            self.redis,
            keys,
            [
                self.dedup_ttl,
                self.maxlen,
                encode_bot_envelope(envelope),
                bot.stream_ttl,
                int(received_at * 1000),
            ],
        )
        outcome = "stored" if entry_id else "duplicate"
        metrics.CALLBACKS.labels(receiver.label, outcome).inc()
        log.info(
            f"bot callback {outcome}",
            extra={"app": receiver.label, "trace_id": trace_id, "dedup_key": key},
        )
        if not started:
            return None
        return StreamState.from_fields(text, finished, started)

    def _answer(self, bot: BotSettings, stream_id: str, state: StreamState | None) -> bytes:
        """A stream reply from its state; no state (expired) → finished with expired_text."""
        if state is None:
            return stream_reply(stream_id, bot.expired_text, finish=True)
        return stream_reply(stream_id, state.text, finish=state.finished)

    async def _poll(self, bot: BotSettings, stream_id: str) -> bytes:
        """A refresh: the stream as it stands; ended with what it has once answer_timeout passed."""
        state = None
        if (streams := self._streams_of(stream_id)) is not None:
            state = await streams.read(bot.name, stream_id)
            if state and not state.finished and time.time() - state.started > bot.answer_timeout:
                state = await streams.close(bot.name, stream_id, bot.no_answer_text)
        return self._answer(bot, stream_id or "unknown", state)

    def _partition(self, receiver: BotReceiver, callback: BotCallbackType) -> str:
        """The key prefix of the member's partition: one member's callbacks share it."""
        return prefix_for(self.prefix, self.partitions, receiver.label, callback.from_.userid)

    def _stream_id(self, receiver: BotReceiver, callback: BotCallbackType) -> str:
        """The message's stream id; with partitions, its partition number follows the hash, so
        a refresh poll (which carries only the id) finds the stream's state."""
        stream_id = stream_id_for(receiver.bot.name, callback.msgid)
        if self.partitions == 1:
            return stream_id
        index = partition_index(receiver.label, callback.from_.userid, self.partitions)
        return f"{stream_id}p{index}"

    def _streams_of(self, stream_id: str) -> BotStreams | None:
        """The streams of the partition a stream id names; None for an id we never made."""
        found = _STREAM_ID.fullmatch(stream_id)
        if found is None or (found["partition"] is None) != (self.partitions == 1):
            return None
        index = int(found["partition"] or 0)
        if index >= self.partitions:
            return None
        return BotStreams(self.redis, names.partition(self.prefix, index, self.partitions))


def bot_routes(settings: Settings, redis: Redis, *, dedup_ttl: int) -> list[Route]:
    """``/bot/{name}`` for the bots of WECOM_BOTS_FILE (none configured: every name is 404)."""
    endpoint = BotEndpoint(
        {name: BotReceiver.build(bot) for name, bot in settings.bots.items()},
        redis,
        prefix=settings.prefix,
        partitions=settings.partitions,
        maxlen=settings.stream_maxlen,
        dedup_ttl=dedup_ttl,
        max_skew=settings.ingress_max_clock_skew,
        max_body=settings.ingress_max_body,
    )
    return [Route("/bot/{name}", endpoint.handle, methods=["GET", "POST"])]
