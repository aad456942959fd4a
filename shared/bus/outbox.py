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

import msgspec
from redis.asyncio import Redis

from shared.bus import names, partitions, sendstate
from shared.bus.scripts import Script
from shared.config import Settings
from shared.errors import SchemaError
from shared.schemas.envelope import encode_outbox, outbox_entry
from shared.schemas.outbound import decode_send_request

__all__ = ["IDEMPOTENCY_TTL", "enqueue"]

# KEYS[1] idempotency mark, KEYS[2] outbox; ARGV: ttl, maxlen, request id, data.
# Returns the id that holds the key: ours (enqueued now) or the first request's.
_ENQUEUE_ONCE = Script("""
local first = redis.call('GET', KEYS[1])
if first then return first end
redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'data', ARGV[4])
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
    outbox = names.outbox(part)
    if idempotency_key is None:
        await redis.xadd(outbox, {"data": data}, maxlen=settings.stream_maxlen, approximate=True)
    else:
        mark = names.idempotency(part, digest)
        args: list[str | bytes | int] = [IDEMPOTENCY_TTL, settings.stream_maxlen, request_id, data]
        held = await _ENQUEUE_ONCE(redis, [mark, outbox], args)
        first = held.decode() if isinstance(held, bytes) else str(held)
        if first != request_id:  # the key was used first with another origin: nothing added
            return first
    async with redis.pipeline(transaction=False) as pipe:
        sendstate.accepted(pipe, settings.prefix, request_id)
        await pipe.execute()
    return request_id
