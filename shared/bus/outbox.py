"""Putting send requests on the outbox: the one door for the send API and ``wecom-bus send``.

``enqueue`` validates a WeCom ``message/send`` body as WeCom would (``agentid`` may be left out;
``app`` names an app of the apps file) and appends it to the outbox of its recipient's partition
(``shared.bus.partitions``; ``<prefix>:outbox`` with one partition). With an idempotency key,
the mark (in the same partition) and the XADD are one script: a repeated key returns the first
request's id and enqueues nothing. Then the request's status (``queued``) is written, unless the
sender already wrote one (``HSETNX``: the status hash is in another slot on a cluster, so it
cannot share the script), which is how ``GET /v1/messages/{id}`` tells an accepted id from one
never seen.

Text and markdown content may exceed WeCom's 2048 bytes (up to 20 parts): the sender sends it
as ordered parts.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import NamedTuple

import msgspec
from redis.asyncio import Redis

from shared.bus import names, partitions, sendstate
from shared.bus.scripts import Script
from shared.config import Settings
from shared.errors import SchemaError
from shared.schemas.envelope import OutboxEntry, encode_outbox, outbox_entry
from shared.schemas.outbound import decode_send_request

__all__ = ["IDEMPOTENCY_TTL", "Enqueued", "enqueue", "enqueue_once"]

# KEYS[1] idempotency mark, KEYS[2] outbox[, KEYS[3] the request's status hash, when it is in
# the same slot]; ARGV: ttl, maxlen, request id, data, status ttl.
# Returns {the id that holds the key, 1 if enqueued now}: ours, or the first request's and 0.
_ENQUEUE_ONCE = Script("""
local first = redis.call('GET', KEYS[1])
if first then return {first, 0} end
redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'data', ARGV[4])
if KEYS[3] then
  redis.call('HSET', KEYS[3], 'state', 'queued')
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
return {ARGV[3], 1}
""")
IDEMPOTENCY_TTL = 86_400


class Enqueued(NamedTuple):
    id: str  # the request that holds the idempotency mark
    now: bool  # enqueued by this call (False: an earlier call's request holds the mark)


class _Target(msgspec.Struct):
    app: str = "default"


_target = msgspec.json.Decoder(_Target)


async def enqueue(
    redis: Redis,
    settings: Settings,
    body: bytes,
    *,
    origin: str,
    idempotency_key: str | None = None,
) -> str:
    """Validate a message/send body and put it on the outbox; return the request id.

    Raises SchemaError (naming the field) for what WeCom would refuse, ConfigError for an
    unknown app. Shared by the HTTP API and ``wecom-bus send``.
    """
    try:
        app_name = _target.decode(body).app
    except msgspec.ValidationError as exc:
        if "$.app" in str(exc):
            raise SchemaError("$.app", "must be a string naming an app") from None
        raise SchemaError("$", "must be a JSON object") from None
    except msgspec.DecodeError:
        raise SchemaError("$", "is not valid JSON") from None
    app = settings.app(app_name)
    request = decode_send_request(body, default_agentid=app.agent_id)
    if request.agentid is not None and request.agentid != app.agent_id:
        raise SchemaError("$.agentid", f"is not app {app_name!r}'s AgentId")
    digest = ""
    if idempotency_key:
        digest = hashlib.sha256(f"{app_name}\0{idempotency_key}".encode()).hexdigest()
        request_id = f"{origin}-{digest[:32]}"
    else:
        request_id, idempotency_key = f"{origin}-{uuid.uuid4().hex}", None
    entry = outbox_entry(
        id=request_id,
        app=app_name,
        trace_id=uuid.uuid4().hex[:16],
        created_at=time.time(),
        request=request,
        origin=origin,
    )
    data = encode_outbox(entry)
    part = partitions.prefix_for(
        settings.prefix, settings.partitions, app_name, partitions.request_member(request)
    )
    if idempotency_key is not None:  # its mark is in the outbox's partition (one slot)
        mark = names.idempotency(part, digest)
        first = await enqueue_once(
            redis,
            entry,
            mark,
            prefix=settings.prefix,
            part=part,
            maxlen=settings.stream_maxlen,
            data=data,
        )
        return first.id
    # One MULTI when the outbox and the status share a slot (no partitions), else in order.
    outbox = names.outbox(part)
    async with redis.pipeline(transaction=part == settings.prefix) as pipe:
        pipe.xadd(outbox, {"data": data}, maxlen=settings.stream_maxlen, approximate=True)
        sendstate.accepted(pipe, settings.prefix, request_id)
        await pipe.execute()
    return request_id


async def enqueue_once(
    redis: Redis,
    entry: OutboxEntry,
    mark: str,
    *,
    prefix: str = names.DEFAULT_PREFIX,
    part: str | None = None,
    maxlen: int = 100_000,
    data: bytes | None = None,
) -> Enqueued:
    """Put ``entry`` on partition ``part``'s outbox (None: ``prefix``'s, unpartitioned) unless
    ``mark`` (a ``names.idempotency`` key in that partition) is held.

    The mark, the XADD and the ``queued`` status are one script, so a retried call (a repeated
    Idempotency-Key, a redelivered event's early reply) enqueues nothing. With partitions the
    status hash is in another slot: it is written right after, by the call that enqueued.
    Returns the id that holds the mark (``entry.id``, or the first request's) and whether it
    was enqueued now. ``data``: ``entry`` already encoded.
    """
    part = part or prefix
    status = names.status(prefix, entry.id)
    first, now = await _ENQUEUE_ONCE(
        redis,
        [mark, names.outbox(part), *([status] if part == prefix else [])],
        [IDEMPOTENCY_TTL, maxlen, entry.id, data or encode_outbox(entry), sendstate.STATUS_TTL],
    )
    if now and part != prefix:
        async with redis.pipeline(transaction=False) as pipe:
            sendstate.accepted(pipe, prefix, entry.id)
            await pipe.execute()
    return Enqueued(first.decode() if isinstance(first, bytes) else str(first), bool(now))
