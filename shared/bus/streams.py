"""Thin typed wrappers over the Redis Streams commands the bus uses.

Everything here is generic over bytes: no schema is imported. The two multi-key operations,
``commit`` (outputs + ack) and ``dead_letter`` (dead-letter entry + ack), are Lua scripts rather
than MULTI blocks, for two reasons:

* they first check that the entry is still pending in the group, so when two consumers end up
  processing the same entry (a slow one and the one that reclaimed it) only the first to finish
  writes outputs; the other finds it acknowledged and writes nothing;
* the XACK comes last, so an output that fails to be written (e.g. WRONGTYPE) aborts the script
  before the ack, while a MULTI would still have acked.

On Redis Cluster every key a script touches must share a slot: give ``BUS_PREFIX`` a hash tag
(``{wecom}``), see ``shared.bus.names``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import msgspec
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from shared import tracing
from shared.bus import names
from shared.bus.scripts import Script, ScriptCall, Wait
from shared.bus.streaminfo import (
    ConsumerInfo,
    GroupInfo,
    StreamInfo,
    consumers,
    groups,
    stream_info,
)
from shared.bus.wire import send_batch
from shared.config import Settings

__all__ = [
    "COMMIT",
    "DEFAULT_MAXLEN",
    "Claimed",
    "ConsumerInfo",
    "Entry",
    "FieldMap",
    "FieldValue",
    "GroupInfo",
    "Start",
    "StreamInfo",
    "ack",
    "claim",
    "claim_stale",
    "commit",
    "commit_call",
    "consumers",
    "dead_letter",
    "deferred_until",
    "delivery_counts",
    "ensure_group",
    "groups",
    "id_before",
    "id_key",
    "is_nogroup",
    "publish",
    "read_group",
    "read_group_after",
    "remove_idle_consumers",
    "schedule_retry",
    "set_delivery_count",
    "stream_info",
    "take_due",
]

DEFAULT_MAXLEN = Settings().stream_maxlen  # BUS_STREAM_MAXLEN's default, stated once
Start = Literal["new", "backlog"]
FieldValue = bytes | str | int | float
# Keys are str or bytes. Spelled Any because Mapping is invariant in its key type, so neither
# dict[str, ...] nor dict[bytes, ...] would match Mapping[str | bytes, ...].
FieldMap = Mapping[Any, FieldValue]
# (stream, fields, maxlen, order key): an output that gets the member's next sequence number.
OrderedOutput = tuple[str, FieldMap, int | None, str | None]


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    fields: dict[bytes, bytes]


class Claimed(msgspec.Struct, frozen=True, kw_only=True):
    entries: list[Entry]
    deleted: list[str]  # pending ids whose entry was trimmed or XDELed; Redis dropped them
    cursor: str  # where the next XAUTOCLAIM starts; "0-0" once the whole PEL was scanned


# KEYS: input stream, retry zset, order-done key (or the stream again), then per output its
# stream and, when it has an order key, its sequence counter.
# ARGV: group, id, the input's sequence number ("" = unordered), then per output:
# maxlen ("" = none), number of fields, order key ("" = none), field, value, ...
COMMIT = Script("""
local group, id = ARGV[1], ARGV[2]
if #redis.call('XPENDING', KEYS[1], group, id, id, 1) == 0 then return 0 end
local a, k = 4, 4
while k <= #KEYS do
  local cmd = {'XADD', KEYS[k]}
  k = k + 1
  if ARGV[a] ~= '' then
    cmd[#cmd + 1] = 'MAXLEN'; cmd[#cmd + 1] = '~'; cmd[#cmd + 1] = ARGV[a]
  end
  cmd[#cmd + 1] = '*'
  local n, okey = tonumber(ARGV[a + 1]), ARGV[a + 2]
  a = a + 3
  for _ = 1, 2 * n do cmd[#cmd + 1] = ARGV[a]; a = a + 1 end
  if okey ~= '' then
    local seq = redis.call('INCR', KEYS[k])
    redis.call('EXPIRE', KEYS[k], 86400)
    k = k + 1
    cmd[#cmd + 1] = 'okey'; cmd[#cmd + 1] = okey; cmd[#cmd + 1] = 'oseq'; cmd[#cmd + 1] = seq
  end
  redis.call(unpack(cmd))
end
if ARGV[3] ~= '' then
  local done = tonumber(redis.call('GET', KEYS[3]) or '0')
  if tonumber(ARGV[3]) > done then redis.call('SET', KEYS[3], ARGV[3], 'EX', 86400) end
end
redis.call('XACK', KEYS[1], group, id)
redis.call('ZREM', KEYS[2], id)
return 1
""")


# KEYS: input stream, retry zset, dead-letter stream.   ARGV: group, id, maxlen, field, value...
_DEAD_LETTER = Script("""
local group, id = ARGV[1], ARGV[2]
if #redis.call('XPENDING', KEYS[1], group, id, id, 1) == 0 then return false end
local cmd = {'XADD', KEYS[3]}
if ARGV[3] ~= '' then cmd[#cmd + 1] = 'MAXLEN'; cmd[#cmd + 1] = '~'; cmd[#cmd + 1] = ARGV[3] end
cmd[#cmd + 1] = '*'
for i = 4, #ARGV do cmd[#cmd + 1] = ARGV[i] end
local dlq_id = redis.call(unpack(cmd))
redis.call('XACK', KEYS[1], group, id)
redis.call('ZREM', KEYS[2], id)
return dlq_id
""")

# KEYS: stream.   ARGV: group, min idle ms, consumer to keep.   Atomic, so a consumer cannot
# take an entry between the check "nothing pending" and DELCONSUMER (which drops its PEL).
_REMOVE_IDLE = Script("""
local removed = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['name'] ~= ARGV[3] and f['pending'] == 0 and f['idle'] >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    removed[#removed + 1] = f['name']
  end
end
return removed
""")

# KEYS: retry zset.   ARGV: now ms, limit.   Removing the ids is what makes one replica their
# owner: two replicas never both take the same due retry.
_TAKE_DUE = Script("""
local ids = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[2])
if #ids > 0 then redis.call('ZREM', KEYS[1], unpack(ids)) end
return ids
""")


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(raw: Sequence[Any]) -> list[Entry]:
    # Redis may answer nil fields for an entry deleted after it was delivered; skip those.
    return [Entry(id=_str(i), fields=dict(f)) for i, f in raw if f is not None]


def _maxlen_arg(maxlen: int | None) -> str:
    return "" if maxlen is None else str(maxlen)


def id_key(entry_id: str) -> tuple[int, int]:
    """An entry id as a sortable pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def id_before(entry_id: str) -> str:
    """The id just before ``entry_id``: a group created there delivers ``entry_id`` next."""
    ms, _, seq = entry_id.partition("-")
    if int(seq or 0) > 0:
        return f"{ms}-{int(seq) - 1}"
    return f"{int(ms) - 1}-{2**64 - 1}" if int(ms) > 0 else "0"


def is_nogroup(exc: BaseException) -> bool:
    """True for the error Redis gives when the group (or the whole stream) is gone."""
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


async def publish(
    redis: Redis, stream: str, fields: FieldMap, *, maxlen: int | None = DEFAULT_MAXLEN
) -> str:
    """XADD with ``MAXLEN ~ maxlen`` (``None``: never trim); returns the entry id."""
    values: dict[Any, Any] = dict(fields)
    entry_id = await redis.xadd(stream, values, maxlen=maxlen, approximate=True)
    return _str(entry_id)


async def ensure_group(
    redis: Redis, stream: str, group: str, *, start: Start | str = "new"
) -> bool:
    """Create ``group`` (and the stream) unless it exists; True when this call created it.

    ``start``: "new" reads entries added from now on, "backlog" everything still in the stream,
    anything else is taken as an entry id.
    """
    first = {"new": "$", "backlog": "0"}.get(start, start)
    try:
        await redis.xgroup_create(stream, group, id=first, mkstream=True)
    except ResponseError as exc:
        if str(exc).startswith("BUSYGROUP"):
            return False
        raise
    return True


async def read_group(
    redis: Redis, stream: str, group: str, consumer: str, *, count: int, block_ms: int | None
) -> list[Entry]:
    """XREADGROUP of new entries (``>``); ``block_ms=None`` returns at once. Sent through
    ``shared.bus.wire`` (a consumer's hottest call) except on a cluster and while tracing."""
    if isinstance(redis, RedisCluster) or tracing.enabled():
        got: Any = await redis.xreadgroup(
            group, consumer, {stream: ">"}, count=count, block=block_ms
        )
        if isinstance(got, dict):  # RESP3
            return [e for entries in got.values() for e in _entries(entries[0])]
        return [e for _, entries in got or () for e in _entries(entries)]
    block = () if block_ms is None else ("BLOCK", block_ms)
    command = ("XREADGROUP", "GROUP", group, consumer, "COUNT", count, *block)
    (reply,) = await send_batch(redis, [(*command, "STREAMS", stream, ">")])
    return _read_reply(reply)


async def read_group_after(
    redis: Redis,
    commits: Sequence[ScriptCall],
    stream: str,
    group: str,
    consumer: str,
    *,
    count: int,
    block_ms: int | None = None,
    answered: Callable[[int, Any], None] | None = None,
) -> tuple[list[Any], list[Entry]]:
    """Script calls (the consumer's commits) and then XREADGROUP, in one write on a single
    server: each call's answer (an error in place: NOSCRIPT is the caller's to handle), and the
    entries read. ``answered(i, answer)`` hears each call's answer as soon as it is read, so
    the read may block (``block_ms``) without holding up the calls' callers."""
    commands: list[Sequence[Any]] = [
        ("EVALSHA", script.sha, len(keys), *keys, *args) for script, keys, args in commits
    ]
    block = () if block_ms is None else ("BLOCK", block_ms)
    commands.append(
        ("XREADGROUP", "GROUP", group, consumer, "COUNT", count, *block, "STREAMS", stream, ">")
    )
    *answers, reply = await send_batch(redis, commands, early=answered)
    return answers, _read_reply(reply)


def _read_reply(reply: Any) -> list[Entry]:
    if isinstance(reply, BaseException):
        raise reply
    found = reply.values() if isinstance(reply, dict) else [s[1] for s in reply or ()]
    return [Entry(id=_str(i), fields=_pairs(f)) for e in found for i, f in e if f is not None]


def _pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


async def ack(redis: Redis, stream: str, group: str, *ids: str) -> int:
    return int(await redis.xack(stream, group, *ids)) if ids else 0


async def claim_stale(
    redis: Redis,
    stream: str,
    group: str,
    consumer: str,
    *,
    min_idle_ms: int,
    count: int = 100,
    cursor: str = "0-0",
) -> Claimed:
    """XAUTOCLAIM entries idle for at least ``min_idle_ms``; each claim counts a delivery."""
    reply = await redis.xautoclaim(stream, group, consumer, min_idle_ms, cursor, count=count)
    deleted = [_str(i) for i in reply[2]] if len(reply) > 2 else []  # Redis >= 7 only
    return Claimed(entries=_entries(reply[1]), deleted=deleted, cursor=_str(reply[0]))


async def claim(
    redis: Redis, stream: str, group: str, consumer: str, ids: Sequence[str], min_idle_ms: int = 0
) -> list[Entry]:
    """XCLAIM ``ids``; entries deleted from the stream are dropped from the PEL and not returned."""
    if not ids:
        return []
    return _entries(await redis.xclaim(stream, group, consumer, min_idle_ms, list(ids)))


async def set_delivery_count(
    redis: Redis, stream: str, group: str, consumer: str, entry_id: str, count: int
) -> None:
    """Reset an entry's delivery counter (XCLAIM RETRYCOUNT JUSTID, which does not count one)."""
    await redis.xclaim(stream, group, consumer, 0, [entry_id], retrycount=count, justid=True)


async def delivery_counts(
    redis: Redis, stream: str, group: str, ids: Sequence[str]
) -> dict[str, int]:
    """How often each of ``ids`` was delivered (XPENDING); ids no longer pending are absent."""
    async with redis.pipeline(transaction=False) as pipe:
        for entry_id in ids:
            pipe.xpending_range(stream, group, entry_id, entry_id, 1)
        replies = await pipe.execute()
    return {_str(r[0]["message_id"]): int(r[0]["times_delivered"]) for r in replies if r}


def commit_call(
    *,
    stream: str,
    group: str,
    entry_id: str,
    outputs: Sequence[tuple[str, FieldMap] | tuple[str, FieldMap, int | None] | OrderedOutput],
    retry_key: str,
    maxlen: int | None = DEFAULT_MAXLEN,
    order: tuple[str, int] | None = None,
) -> tuple[list[str], list[Any]]:
    """Keys and arguments of one commit, for :data:`COMMIT` (called alone or batched)."""
    done_key = names.order_done(stream, group, order[0]) if order else stream
    keys = [stream, retry_key, done_key]
    args: list[Any] = [group, entry_id, str(order[1]) if order else ""]
    for out in outputs:
        fields = out[1]
        okey = out[3] if len(out) > 3 else None
        keys.append(out[0])
        if okey:
            keys.append(names.order_seq(out[0], okey))
        args += (_maxlen_arg(out[2] if len(out) > 2 else maxlen), len(fields), okey or "")
        for name, value in fields.items():
            args += (name, value)
    return keys, args


async def commit(redis: Redis, *, wait: Wait | None = None, **call: Any) -> bool:
    """XADD every output and XACK the entry atomically, if it is still pending in the group.

    The other arguments are :func:`commit_call`'s. An output is ``(stream, fields)``, trimmed
    to ``maxlen``, ``(stream, fields, maxlen)`` or ``(stream, fields, maxlen, order key)``:
    then it gets the member's next sequence number on that stream (fields ``okey``, ``oseq``).
    ``order`` = (order key, sequence number) of the input: the group's done mark of that
    member moves up to it (``shared.bus.ordering``). False: someone else already acknowledged
    the entry, and nothing was written. A NOGROUP error means the group or stream is gone.
    ``wait`` (BUS_MIN_REPLICAS): NotReplicated when too few replicas confirmed it in time.
    """
    keys, args = commit_call(**call)
    return bool(await COMMIT(redis, keys, args, wait=wait))


async def dead_letter(
    redis: Redis,
    *,
    deadletter: str,
    stream: str,
    group: str,
    entry_id: str,
    fields: FieldMap,
    retry_key: str,
    maxlen: int | None = DEFAULT_MAXLEN,
) -> str | None:
    """Move a pending entry to the dead-letter stream: XADD ``fields`` there and XACK, atomically.

    Returns the dead-letter entry id, or None when the entry was no longer pending.
    """
    args: list[Any] = [group, entry_id, _maxlen_arg(maxlen)]
    for name, value in fields.items():
        args += (name, value)
    reply = await _DEAD_LETTER(redis, [stream, retry_key, deadletter], args)
    return _str(reply) if reply else None


async def schedule_retry(redis: Redis, retry_key: str, entry_id: str, due_ms: int) -> None:
    await redis.zadd(retry_key, {entry_id: due_ms})


async def take_due(redis: Redis, retry_key: str, now_ms: int, limit: int) -> list[str]:
    """Remove and return up to ``limit`` deferred entry ids that are due by ``now_ms``."""
    if limit <= 0:
        return []
    return [_str(i) for i in await _TAKE_DUE(redis, [retry_key], [now_ms, limit])]


async def deferred_until(redis: Redis, retry_key: str, ids: Sequence[str]) -> dict[str, int]:
    """Due time (unix ms) of those ``ids`` that are deferred."""
    if not ids:
        return {}
    scores = await redis.zmscore(retry_key, list(ids))
    return {i: int(s) for i, s in zip(ids, scores, strict=True) if s is not None}


async def remove_idle_consumers(
    redis: Redis, stream: str, group: str, *, idle_ms: int, keep: str
) -> list[str]:
    """Delete consumers idle ≥ ``idle_ms`` with nothing pending (never ``keep``); their names."""
    removed = await _REMOVE_IDLE(redis, [stream], [group, idle_ms, keep])
    return [_str(name) for name in removed]
