"""Every Redis key and stream name wecom-bus uses, in one place.

All keys start with ``<prefix>:`` (``BUS_PREFIX``, default ``wecom``). On Redis Cluster give the
prefix a hash tag, e.g. ``{wecom}``: then every key lands in one slot, and the scripts and
transactions that touch several keys at once (commit = output XADD + XACK, dedup + XADD, dead
letter) run unchanged.

==========================================  ======  =============================================
key                                         type    role
==========================================  ======  =============================================
``<prefix>:events``                         stream  inbound events (field ``data``: EventEnvelope)
``<prefix>:outbox``                         stream  send requests (field ``data``: OutboxEntry)
``<prefix>:deadletter``                     stream  entries that exhausted retries or were rejected
``<prefix>:delayed``                        zset    send requests waiting (score = due unix time)
``<prefix>:seen:<app>:<key>``               string  callback dedup mark, with TTL
``<prefix>:sent:<request id>``              string  send idempotency mark (WeCom's msgid), TTL
``<prefix>:token:<corp>:<agent>``           string  cached access token, TTL
``<prefix>:token-lock:<corp>:<agent>``      string  single-flight refresh lock, PX
``<prefix>:rate:<part>:…``                  varies  send-rate buckets
``<stream>:retry:<group>``                  zset    entries a handler deferred with ``Retry``
                                                    (member = entry id, score = due unix ms)
``<prefix>:health:<group>:<host>``          string  consumer heartbeat (JSON), TTL
==========================================  ======  =============================================
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_PREFIX",
    "RESPONDER_GROUP",
    "SENDER_GROUP",
    "deadletter",
    "delayed",
    "events",
    "health",
    "health_pattern",
    "outbox",
    "rate",
    "retry",
    "seen",
    "sent",
    "token",
    "token_lock",
]

DEFAULT_PREFIX = "wecom"
RESPONDER_GROUP = "responder"
SENDER_GROUP = "sender"


def events(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:events"


def outbox(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:outbox"


def deadletter(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:deadletter"


def delayed(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:delayed"


def seen(prefix: str, app: str, key: str) -> str:
    """Callback dedup mark for one WeCom message or event of one app."""
    return f"{prefix}:seen:{app}:{key}"


def sent(prefix: str, request_id: str) -> str:
    """Send idempotency mark; holds WeCom's msgid once the request was delivered."""
    return f"{prefix}:sent:{request_id}"


def token(prefix: str, corp_id: str, agent_id: int | str) -> str:
    """The cached access token of one app (a token belongs to an app, never to a corp)."""
    return f"{prefix}:token:{corp_id}:{agent_id}"


def token_lock(prefix: str, corp_id: str, agent_id: int | str) -> str:
    return f"{prefix}:token-lock:{corp_id}:{agent_id}"


def rate(prefix: str, *parts: str | int) -> str:
    """A send-rate bucket, e.g. ``rate(prefix, app, "member", user_id)``."""
    return ":".join([f"{prefix}:rate", *map(str, parts)])


def retry(stream: str, group: str) -> str:
    """Deferred deliveries of ``group`` on ``stream``.

    Derived from the stream key rather than the prefix so it shares the stream's hash tag.
    """
    return f"{stream}:retry:{group}"


def health(prefix: str, group: str, host: str) -> str:
    """Heartbeat of the consumer of ``group`` running on ``host`` (the pod name in k8s)."""
    return f"{prefix}:health:{group}:{host}"


def health_pattern(prefix: str, group: str) -> str:
    """SCAN pattern matching every heartbeat of ``group``."""
    return f"{prefix}:health:{group}:*"
