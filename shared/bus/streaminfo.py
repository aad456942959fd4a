"""What XINFO tells about a stream, its groups and their consumers (metrics, the console,
the consumer sweep), typed."""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

__all__ = ["ConsumerInfo", "GroupInfo", "StreamInfo", "consumers", "groups", "stream_info"]


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class GroupInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    consumers: int
    pending: int
    lag: int | None  # None when Redis cannot tell (after XDEL / trimming past the group)
    last_delivered_id: str
    entries_read: int | None = None  # Redis >= 7: entries the group has read (None: unknown)


class StreamInfo(msgspec.Struct, frozen=True, kw_only=True):
    length: int
    entries_added: int  # ever added (Redis >= 7; else the length)
    first_id: str | None  # the oldest entry still in the stream; None when empty
    last_id: str  # the newest id ever added (last-generated-id)


class ConsumerInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    pending: int
    idle_ms: int


async def groups(redis: Redis, stream: str) -> list[GroupInfo]:
    """XINFO GROUPS (lag, pending) for metrics; an empty list when the stream does not exist."""
    try:
        reply = await redis.xinfo_groups(stream)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return []
        raise
    return [
        GroupInfo(
            name=_str(g["name"]),
            consumers=int(g["consumers"]),
            pending=int(g["pending"]),
            lag=None if g.get("lag") is None else int(g["lag"]),
            last_delivered_id=_str(g["last-delivered-id"]),
            entries_read=None if g.get("entries-read") is None else int(g["entries-read"]),
        )
        for g in reply
    ]


async def stream_info(redis: Redis, stream: str) -> StreamInfo | None:
    """XINFO STREAM's length, entries-added and first entry id; None when there is no stream."""
    try:
        reply = await redis.xinfo_stream(stream)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return None
        raise
    first = reply.get("first-entry")
    length = int(reply["length"])
    return StreamInfo(
        length=length,
        entries_added=int(reply.get("entries-added", length)),
        first_id=_str(first[0]) if first else None,
        last_id=_str(reply["last-generated-id"]),
    )


async def consumers(redis: Redis, stream: str, group: str) -> list[ConsumerInfo]:
    reply = await redis.xinfo_consumers(stream, group)
    return [
        ConsumerInfo(name=_str(c["name"]), pending=int(c["pending"]), idle_ms=int(c["idle"]))
        for c in reply
    ]
