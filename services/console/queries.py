"""What the console reads from Redis, as plain records (no HTML here).

Consumer groups come from ``XINFO GROUPS``/``XINFO CONSUMERS`` and the ``XPENDING`` summary;
traffic from the per-minute counters of ``shared.bus.tally``; the delayed queue from
``shared.bus.delayed``'s keys and each request's status (``shared.bus.sendstate``, the code
behind ``GET /v1/messages/{id}``); tokens by their TTL only (the value is never read).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.bus import names, sendstate, tally
from shared.config import Settings
from shared.schemas.envelope import decode_outbox

__all__ = [
    "ConsumerInfo",
    "Delayed",
    "GroupInfo",
    "Traffic",
    "delayed_queue",
    "groups",
    "token_ttls",
    "traffic",
]


class ConsumerInfo(msgspec.Struct, frozen=True):
    name: str
    pending: int
    idle: float  # seconds since it last read or claimed


class GroupInfo(msgspec.Struct, frozen=True, kw_only=True):
    stream: str
    group: str
    lag: int | None  # entries not yet delivered to the group (None: Redis cannot tell)
    pending: int
    consumers: list[ConsumerInfo]
    oldest_id: str | None  # the oldest entry delivered but not acknowledged
    oldest_age: float | None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _id_time(entry_id: str) -> float:
    return int(entry_id.split("-", 1)[0]) / 1000


async def _group(redis: Redis, stream: str, raw: dict[Any, Any], now: float) -> GroupInfo:
    group = _text(raw["name"])
    consumers: Any = await redis.xinfo_consumers(stream, group)
    summary: Any = await redis.xpending(stream, group)
    oldest = _text(summary["min"]) if summary.get("min") else None
    lag = raw.get("lag")
    return GroupInfo(
        stream=stream,
        group=group,
        lag=int(lag) if lag is not None else None,
        pending=int(raw["pending"]),
        consumers=[
            ConsumerInfo(_text(c["name"]), int(c["pending"]), int(c["idle"]) / 1000)
            for c in consumers
        ],
        oldest_id=oldest,
        oldest_age=now - _id_time(oldest) if oldest else None,
    )


def streams(prefix: str) -> list[str]:
    """The streams whose groups the console shows."""
    return [names.events(prefix), names.outbox(prefix)]


async def groups(redis: Redis, prefix: str) -> list[GroupInfo]:
    """Every consumer group of the events and outbox streams (a missing stream has none)."""
    now = time.time()
    found: list[GroupInfo] = []
    for stream in streams(prefix):
        try:
            infos: Any = await redis.xinfo_groups(stream)
        except ResponseError:  # no such stream yet
            continue
        found += await asyncio.gather(*(_group(redis, stream, raw, now) for raw in infos))
    return found


class Traffic(msgspec.Struct, frozen=True, kw_only=True):
    """One app's last hour, minute by minute (oldest first)."""

    app: str
    callbacks: list[int]
    sends: list[int]
    failed: list[int]  # sends WeCom refused or could not take
    by_errcode: dict[str, int]
    ack_mean_ms: float | None
    ack_p99_ms: float | None  # upper bound of the bucket holding the 99th percentile


def _p99(buckets: dict[str, int]) -> float | None:
    total = sum(buckets.values())
    if not total:
        return None
    seen = 0
    for bound in (*tally.ACK_BUCKETS_MS, None):
        seen += buckets.get(f"ack_le_{bound if bound is not None else 'inf'}", 0)
        if seen >= 0.99 * total:
            return float(bound) if bound is not None else float("inf")
    return float("inf")


def _app_traffic(
    app: str, calls: Sequence[dict[str, int]], sends: Sequence[dict[str, int]]
) -> Traffic:
    head = f"{app}|"
    by_errcode: dict[str, int] = {}
    failed: list[int] = []
    totals: list[int] = []
    for minute in sends:
        ok = bad = 0
        for field, n in minute.items():
            if field.startswith(head):
                code = field[len(head) :]
                by_errcode[code] = by_errcode.get(code, 0) + n
                ok, bad = (ok + n, bad) if code == "0" else (ok, bad + n)
        totals.append(ok + bad)
        failed.append(bad)
    ack_us = sum(m.get(f"{head}ack_us", 0) for m in calls)
    ack_n = sum(m.get(f"{head}ack_n", 0) for m in calls)
    buckets: dict[str, int] = {}
    for minute in calls:
        for field, n in minute.items():
            if field.startswith(f"{head}ack_le_"):
                buckets[field[len(head) :]] = buckets.get(field[len(head) :], 0) + n
    return Traffic(
        app=app,
        callbacks=[m.get(f"{head}stored", 0) for m in calls],
        sends=totals,
        failed=failed,
        by_errcode=by_errcode,
        ack_mean_ms=ack_us / ack_n / 1000 if ack_n else None,
        ack_p99_ms=_p99(buckets),
    )


async def traffic(redis: Redis, settings: Settings, minutes: int = 60) -> list[Traffic]:
    """Each app's traffic: the configured apps, and any other app the counters name."""
    now = time.time()
    calls = [c for _, c in await tally.read(redis, settings.prefix, "callbacks", minutes, now=now)]
    sends = [c for _, c in await tally.read(redis, settings.prefix, "sends", minutes, now=now)]
    apps = dict.fromkeys(settings.apps)
    for minute in (*calls, *sends):
        apps.update(dict.fromkeys(field.split("|", 1)[0] for field in minute))
    return [_app_traffic(app, calls, sends) for app in apps]


class Delayed(msgspec.Struct, frozen=True, kw_only=True):
    request_id: str
    app: str
    to: str
    due: float
    reason: str


async def delayed_queue(redis: Redis, prefix: str, limit: int = 100) -> tuple[int, list[Delayed]]:
    """(how many wait, the first ``limit`` by due time with who and why)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(names.delayed(prefix))
        pipe.zrange(names.delayed(prefix), 0, limit - 1, withscores=True)
        total, first = await pipe.execute()
    ids = [_text(member) for member, _ in first]
    bodies: list[Any] = await redis.hmget(names.delayed_data(prefix), ids) if ids else []
    states = await asyncio.gather(*(sendstate.read(redis, prefix, i) for i in ids))
    rows = []
    for (_, due), request_id, body, state in zip(first, ids, bodies, states, strict=True):
        app = to = ""
        if body is not None:
            try:
                entry = decode_outbox(body)
                request = entry.request
                app = entry.app
                to = "|".join(x for x in (request.touser, request.toparty, request.totag) if x)
            except (msgspec.DecodeError, msgspec.ValidationError):
                to = "(undecodable)"
        reason = state.reason or "" if state is not None else ""
        rows.append(Delayed(request_id=request_id, app=app, to=to, due=float(due), reason=reason))
    return int(total), rows


async def token_ttls(redis: Redis, settings: Settings) -> dict[str, float | None]:
    """Seconds each app's cached token has left (None: no token cached). Reads TTLs only."""
    async with redis.pipeline(transaction=False) as pipe:
        for app in settings.apps.values():
            pipe.pttl(names.token(settings.prefix, app.corp_id, app.agent_id))
        found = await pipe.execute()
    return {
        name: (ms / 1000 if ms >= 0 else None) if ms != -1 else float("inf")
        for name, ms in zip(settings.apps, found, strict=True)
    }
