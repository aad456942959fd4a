"""The outbox handler: one send request in, at most one delivery to WeCom out.

For each entry: already sent (``sent:<id>``) → done; over a member's rate limit → park it in
``<prefix>:delayed`` until a slot is free; else send. A redelivered entry (it may have reached
WeCom before a crash or timeout) is sent with ``enable_duplicate_check`` so WeCom drops a copy.
Transient failures → ``Retry`` with exponential backoff and jitter (then, after
``BUS_MAX_DELIVERIES``, the dead letter); permanent ones → ``Reject`` with WeCom's errcode and a
sentence of advice.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence

import msgspec
from prometheus_client import Counter
from redis.asyncio import Redis

from shared.bus import delayed, names
from shared.bus.delivery import Delivery, Output, Reject, Retry
from shared.schemas.envelope import OutboxEntry, decode_outbox
from shared.schemas.outbound import encode_send_request
from shared.wecom.client import SendResult, WeComClient
from shared.wecom.errors import (
    PermanentAPIError,
    WeComAPIError,
    WeComUnavailableError,
)
from shared.wecom.governor import Governor, counted_members

__all__ = ["OutboxHandler"]

log = logging.getLogger("wecom_bus.sender")

SENDS = Counter(
    "wecom_sender_sends", "message/send outcomes by app and errcode", ["app", "errcode"]
)
PARTIAL = Counter(
    "wecom_sender_partial_recipients",
    "Recipients WeCom reported invalid or unlicensed in a successful send",
    ["app", "kind"],
)
SKIPPED = Counter(
    "wecom_sender_skipped", "Requests not sent again because sent:<id> exists", ["app"]
)

SENT_TTL = 7 * 86_400  # WeCom's recall window is 24 h; the card response_code lives 72 h
_sent_encoder = msgspec.json.Encoder()


class OutboxHandler:
    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        clients: Mapping[str, WeComClient],
        governor: Governor,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        rate_limited_floor: float = 60.0,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.clients = clients
        self.governor = governor
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        # 45009 means WeCom blocks the app for at least a minute; don't knock before that.
        self.rate_limited_floor = rate_limited_floor

    def backoff(self, attempt: int, floor: float = 0.0) -> float:
        """Exponential with full jitter on top of the floor WeCom asks for (e.g. 60 s for 45009)."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
        return floor + random.uniform(ceiling / 2, ceiling)

    async def __call__(self, delivery: Delivery) -> Sequence[Output]:
        raw = delivery.fields.get(b"data", b"")
        try:
            entry = decode_outbox(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise Reject(f"undecodable outbox entry: {exc}") from None
        client = self.clients.get(entry.app)
        if client is None:
            raise Reject(f"unknown app {entry.app!r}: not configured in this sender")
        sent_key = names.sent(self.prefix, entry.id)
        if await self.redis.exists(sent_key):
            SKIPPED.labels(entry.app).inc()
            return []
        users = counted_members(entry.request.touser)
        wait = await self.governor.acquire(entry.app, users, entry.id)
        if wait > 0:
            await delayed.schedule(
                self.redis, self.prefix, raw, self.governor.clock() + wait, member_id=entry.id
            )
            log.info(
                "rate limit: send delayed",
                extra={"trace_id": entry.trace_id, "request_id": entry.id, "wait": round(wait, 1)},
            )
            return []  # acked: the request now waits in <prefix>:delayed
        result = await self._send(client, entry, attempt=delivery.delivery_count)
        record = {"msgid": result.msgid, "response_code": result.response_code, "at": time.time()}
        await self.redis.set(sent_key, _sent_encoder.encode(record), ex=SENT_TTL)
        self._report(entry, result)
        return []

    async def _send(self, client: WeComClient, entry: OutboxEntry, *, attempt: int) -> SendResult:
        request = entry.request
        if attempt > 1 and not request.enable_duplicate_check:
            # It may have reached WeCom before a crash or a timeout: let WeCom drop the copy.
            request = msgspec.structs.replace(request, enable_duplicate_check=1)
        extra = {"trace_id": entry.trace_id, "request_id": entry.id, "app": entry.app}
        try:
            return await client.send(encode_send_request(request))
        except PermanentAPIError as exc:
            SENDS.labels(entry.app, str(exc.errcode)).inc()
            await self.governor.release(entry.app, counted_members(request.touser), entry.id)
            log.error("send refused by WeCom", extra={**extra, "errcode": exc.errcode})
            raise Reject(f"errcode {exc.errcode}: {exc.advice}") from None
        except WeComAPIError as exc:  # token (already retried once), -1, 6000, 45009, 45033
            SENDS.labels(entry.app, str(exc.errcode)).inc()
            floor = self.rate_limited_floor if exc.errcode == 45009 else 0.0
            log.warning("send failed, will retry", extra={**extra, "errcode": exc.errcode})
            raise Retry(self.backoff(attempt, floor), f"errcode {exc.errcode}") from None
        except WeComUnavailableError as exc:
            SENDS.labels(entry.app, "unavailable").inc()
            log.warning("WeCom unreachable, will retry", extra={**extra, "error": str(exc)})
            raise Retry(self.backoff(attempt), "WeCom unreachable") from None

    def _report(self, entry: OutboxEntry, result: SendResult) -> None:
        SENDS.labels(entry.app, "0").inc()
        for kind in ("invaliduser", "invalidparty", "invalidtag", "unlicenseduser"):
            if bad := getattr(result, kind):
                PARTIAL.labels(entry.app, kind).inc(len(bad))
                log.warning(
                    "some recipients were not reached",
                    extra={"trace_id": entry.trace_id, "request_id": entry.id, kind: bad},
                )
