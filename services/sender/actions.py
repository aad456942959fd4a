"""The sender's side of outbox actions and attachments (``shared.schemas.actions``).

An action entry (field ``action``) is run once: its ``sent:<id>`` mark is checked first and
written after WeCom accepted it, with the request's state for ``GET /v1/messages/{id}``.
WeCom refusing it (a msgid older than 24 hours, a used ResponseCode…) dead-letters it at once
with the errcode and advice; WeCom unreachable, busy or rate-limiting retries it with backoff.
An AI-bot response goes through ``shared.aibot.respond`` (its own once-only mark per URL).

An attachment (a send request with ``upload``) is uploaded right before its send; the media_id
is kept under ``upload:<id>`` for 3 days (the media's life), so a redelivered or delayed entry
is sent with the same file and uploads nothing again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn, cast

import httpx
import msgspec
from redis.asyncio import Redis

from shared.aibot.respond import ResponseUnsent, respond
from shared.bus import names, sendstate
from shared.bus.delivery import Delivery, Output, Reject, Retry
from shared.schemas.actions import ActionEntry, BotResponse, Recall, UpdateCard, decode_action
from shared.schemas.envelope import OutboxEntry
from shared.schemas.outbound import encode_send_request, with_media_id
from shared.wecom.client import WeComClient
from shared.wecom.errors import (
    PermanentAPIError,
    WeComAPIError,
    WeComUnavailableError,
)

__all__ = ["UPLOAD_TTL", "ActionHandler", "uploaded"]

log = logging.getLogger("wecom_bus.sender")

UPLOAD_TTL = 3 * 86_400  # temporary media lives 3 days
_SENT_TTL = 7 * 86_400


async def uploaded(
    redis: Redis, prefix: str, client: WeComClient, entry: OutboxEntry
) -> OutboxEntry:
    """``entry`` with its attachment uploaded (once) and its media_id filled in."""
    if entry.upload is None:
        return entry
    key = names.upload(prefix, entry.id)
    kept = cast("bytes | None", await redis.get(key))
    if kept is not None:
        media_id = kept.decode()
    else:
        file = entry.upload
        media_id = await client.upload_media(
            file.kind, file.filename, file.content, file.content_type
        )
        await redis.set(key, media_id, ex=UPLOAD_TTL)
    request = with_media_id(entry.request, media_id)
    return msgspec.structs.replace(entry, request=request, upload=None)


class ActionHandler:
    """Runs the ``action`` entries of the outbox (see the module docstring)."""

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        clients: Mapping[str, WeComClient],
        http: httpx.AsyncClient,
        api_base: str,
        backoff: Callable[[int], float],
        max_deliveries: int = 5,
    ) -> None:
        self.redis, self.prefix, self.clients = redis, prefix, clients
        self.http, self.api_base = http, api_base
        self.backoff, self.max_deliveries = backoff, max_deliveries

    async def __call__(self, delivery: Delivery) -> Sequence[Output]:
        try:
            entry = decode_action(delivery.fields.get(b"action", b""))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise Reject(f"undecodable outbox action: {exc}") from None
        mark = names.sent(self.prefix, entry.id)
        if await self.redis.exists(mark):
            return []
        try:
            msgid = await self._run(entry)
        except (WeComAPIError, WeComUnavailableError, ResponseUnsent) as exc:
            await self._failed(entry, delivery, exc)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(mark, msgspec.json.encode({"msgid": msgid, "response_code": ""}), ex=_SENT_TTL)
            sendstate.sent(pipe, self.prefix, entry.id, [msgid], "")
            await pipe.execute()
        log.info("action done", extra={"request_id": entry.id, "kind": type(entry.action).__name__})
        return []

    async def _run(self, entry: ActionEntry) -> str:
        action = entry.action
        if isinstance(action, BotResponse):
            answer = await respond(
                self.http,
                self.redis,
                url=action.url,
                body=msgspec.json.encode(action.body),
                api_base=self.api_base,
                prefix=self.prefix,
            )
            first = answer.get("first") if answer.get("duplicate") else answer
            code = first.get("errcode", 0) if isinstance(first, dict) else 0
            if code:  # the URL takes one call: whatever WeCom said is final
                errmsg = str(first.get("errmsg", "")) if isinstance(first, dict) else ""
                raise PermanentAPIError(int(code), errmsg, endpoint="response_url")
            return ""
        client = self.clients.get(entry.app)
        if client is None:
            raise Reject(f"unknown app {entry.app!r}: not configured in this sender")
        if isinstance(action, Recall):
            await client.recall(action.msgid)
            return action.msgid
        assert isinstance(action, UpdateCard)
        await client.update_template_card(encode_send_request(action.update))
        return ""

    async def _failed(
        self,
        entry: ActionEntry,
        delivery: Delivery,
        exc: WeComAPIError | WeComUnavailableError | ResponseUnsent,
    ) -> NoReturn:
        """Dead letter (WeCom refused it) or Retry (it may work later); always raises."""
        code = exc.errcode if isinstance(exc, WeComAPIError) else None
        advice = getattr(exc, "advice", "the response_url could not be reached; retrying")
        final = isinstance(exc, PermanentAPIError) or delivery.delivery_count >= self.max_deliveries
        async with self.redis.pipeline(transaction=False) as pipe:
            if final:
                sendstate.dead(pipe, self.prefix, entry.id, code, advice)
            await pipe.execute()
        if isinstance(exc, PermanentAPIError):
            raise Reject(f"errcode {exc.errcode}: {exc.advice}") from None
        raise Retry(self.backoff(delivery.delivery_count), str(exc)) from None
