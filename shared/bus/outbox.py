"""Putting send requests on the outbox: the one door for the send API and ``wecom-bus send``.

``enqueue`` validates a WeCom ``message/send`` body as WeCom would (``agentid`` may be left out;
``app`` names an app of the apps file) and appends it to ``<prefix>:outbox``. With an
idempotency key, the mark and the XADD are one script: a repeated key returns the first
request's id and enqueues nothing. Either way the request's status (``queued``) is written with
it, which is how ``GET /v1/messages/{id}`` tells an accepted id from one never seen.

Text and markdown content may exceed WeCom's 2048 bytes (up to 20 parts): the sender sends it
as ordered parts.
"""

from __future__ import annotations

import hashlib
import time
import uuid

import msgspec
from redis.asyncio import Redis

from shared.bus import names, sendstate
from shared.bus.scripts import Script
from shared.config import Settings
from shared.errors import SchemaError
from shared.schemas.envelope import encode_outbox, outbox_entry
from shared.schemas.outbound import decode_send_request

__all__ = ["IDEMPOTENCY_TTL", "enqueue"]

# KEYS[1] idempotency mark, KEYS[2] outbox, KEYS[3] the request's status hash;
# ARGV: ttl, maxlen, request id, data, status ttl.
# Returns the id that holds the key: ours (enqueued now) or the first request's.
_ENQUEUE_ONCE = Script("""
local first = redis.call('GET', KEYS[1])
if first then return first end
redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'data', ARGV[4])
redis.call('HSET', KEYS[3], 'state', 'queued')
redis.call('EXPIRE', KEYS[3], ARGV[5])
return ARGV[3]
""")
IDEMPOTENCY_TTL = 86_400


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
    if idempotency_key:
        digest = hashlib.sha256(f"{app_name}\0{idempotency_key}".encode()).hexdigest()
        request_id, mark = f"{origin}-{digest[:32]}", names.idempotency(settings.prefix, digest)
    else:
        request_id, mark = f"{origin}-{uuid.uuid4().hex}", None
    entry = outbox_entry(
        id=request_id,
        app=app_name,
        trace_id=uuid.uuid4().hex[:16],
        created_at=time.time(),
        request=request,
        origin=origin,
    )
    data = encode_outbox(entry)
    outbox = names.outbox(settings.prefix)
    if mark is None:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.xadd(outbox, {"data": data}, maxlen=settings.stream_maxlen, approximate=True)
            sendstate.accepted(pipe, settings.prefix, request_id)
            await pipe.execute()
        return request_id
    status = names.status(settings.prefix, request_id)
    first = await _ENQUEUE_ONCE(
        redis,
        [mark, outbox, status],
        [IDEMPOTENCY_TTL, settings.stream_maxlen, request_id, data, sendstate.STATUS_TTL],
    )
    return first.decode() if isinstance(first, bytes) else str(first)
