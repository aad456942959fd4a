"""Every Redis key and stream name wecom-bus uses, in one place.

All keys start with ``<prefix>:`` (``BUS_PREFIX``, default ``wecom``). Keys that one script
touches together share a hash tag (the part in braces), so the same scripts run on Redis
Cluster: an app's token and its lock share ``{<corp>:<agent>}``, an app's rate buckets share
``{<app>}``. A prefix that is itself a hash tag (``{wecom}``) puts every key in one slot.

==========================================  ======  =============================================
key                                         type    role (lifetime)
==========================================  ======  =============================================
``<prefix>:events``                         stream  inbound events (field ``data``); trimmed
``<prefix>:outbox``                         stream  send requests (field ``data``); trimmed
``<prefix>:deadletter``                     stream  entries that exhausted retries or were
                                                    rejected; trimmed
``<prefix>:delayed``                        zset    send requests waiting (score = due time)
``<prefix>:delayed:data``                   hash    the waiting requests' bodies, by member
``<prefix>:seen:<app>:<key>``               string  callback dedup mark (TTL: 2 × skew, ≥ 1 h)
``<prefix>:sent:<request id>``              string  send idempotency mark (WeCom's msgid; TTL)
``<prefix>:sent:<request id>#<k>``          string  the same for part k (1-based) of a request
                                                    split into parts (TTL)
``<prefix>:status:<request id>``            hash    a send request's state for
                                                    ``GET /v1/messages/{id}`` (TTL 7 days)
``<prefix>:idem:<digest>``                  string  send-API ``Idempotency-Key`` (TTL 24 h)
``<prefix>:token:{<corp>:<agent>}``         string  cached access token (TTL: its lifetime)
``<prefix>:token-lock:{<corp>:<agent>}``    string  single-flight refresh lock (PX)
``<prefix>:rate:{<app>}:user:<userid>``     zset    per-member send window (trimmed by script)
``<prefix>:rate:{<app>}:day:<yyyymmdd>``    string  an app's person-times on a WeCom day (TTL)
``<prefix>:circuit:{<app>}``                 hash    an app's send circuit (state, reason, until)
``<stream>:retry:<group>``                  zset    entries a handler deferred with ``Retry``
                                                    (member = entry id, score = due unix ms)
``<stream>:oseq:<order key>``               string  last sequence number given to a member's
                                                    entries on ``stream`` (TTL 1 day, renewed)
``<stream>:odone:<group>:<order key>``      string  highest sequence number of that member the
                                                    group has committed (TTL 1 day, renewed)
==========================================  ======  =============================================

Partitions (``BUS_PARTITIONS`` = N > 1): the events, outbox, dead-letter, delayed and dedup
keys exist once per partition ``i`` (0 … N-1), named as above with ``<prefix>:{p<i>}`` in place
of ``<prefix>`` (:func:`partition`): ``wecom:{p3}:events``, ``wecom:{p3}:seen:<app>:<key>``,
``wecom:{p3}:events:retry:responder``… One hash tag per partition keeps each partition's
scripts in one slot and spreads the partitions over a cluster's nodes. With N = 1 the names are
exactly the ones above. Send marks, states, tokens, rates and circuits are not partitioned.

Nothing else builds a key: ``tests/test_names.py`` fails when a key is formatted elsewhere.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_PREFIX",
    "RESPONDER_GROUP",
    "SENDER_GROUP",
    "circuit",
    "deadletter",
    "delayed",
    "delayed_data",
    "events",
    "idempotency",
    "order_done",
    "order_seq",
    "outbox",
    "partition",
    "partition_of",
    "partitions",
    "rate_day",
    "rate_user",
    "retry",
    "seen",
    "sent",
    "sent_part",
    "status",
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


def delayed_data(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:delayed:data"


def partition(prefix: str, index: int, count: int) -> str:
    """The key prefix of partition ``index`` of ``count``: ``prefix`` itself when ``count`` is 1
    (the names of an unpartitioned bus), else ``<prefix>:{p<index>}`` (its hash tag)."""
    if not 0 <= index < count:
        raise ValueError(f"partition {index} is not in 0..{count - 1}")
    return prefix if count == 1 else f"{prefix}:{{p{index}}}"


def partitions(prefix: str, count: int) -> list[str]:
    """Every partition's key prefix, in order."""
    return [partition(prefix, i, count) for i in range(count)]


def partition_of(stream: str, prefix: str) -> str:
    """The partition prefix a bus stream (``…:events``, ``…:outbox``) belongs to.

    ``wecom:{p3}:events`` → ``wecom:{p3}``; ``wecom:events`` (or any other stream) → ``prefix``.
    """
    head = stream.rpartition(":")[0]
    tag = head[len(prefix) + 1 :] if head.startswith(prefix + ":") else ""
    if tag.startswith("{p") and tag.endswith("}") and tag[2:-1].isdigit():
        return head
    return prefix


def seen(prefix: str, app: str, key: str) -> str:
    """Callback dedup mark for one WeCom message or event of one app."""
    return f"{prefix}:seen:{app}:{key}"


def sent(prefix: str, request_id: str) -> str:
    """Send idempotency mark; holds WeCom's msgid once the request was delivered."""
    return f"{prefix}:sent:{request_id}"


def sent_part(prefix: str, request_id: str, part: int) -> str:
    """Send mark of part ``part`` (1-based) of a request the sender split into parts."""
    return f"{prefix}:sent:{request_id}#{part}"


def status(prefix: str, request_id: str) -> str:
    """A send request's state (queued, delayed, sent, dead) and its details, for the API."""
    return f"{prefix}:status:{request_id}"


def idempotency(prefix: str, digest: str) -> str:
    """The send API's ``Idempotency-Key`` mark (``digest`` covers the app and the key)."""
    return f"{prefix}:idem:{digest}"


def _app_tag(corp_id: str, agent_id: int | str) -> str:
    return f"{{{corp_id}:{agent_id}}}"


def token(prefix: str, corp_id: str, agent_id: int | str) -> str:
    """The cached access token of one app (a token belongs to an app, never to a corp)."""
    return f"{prefix}:token:{_app_tag(corp_id, agent_id)}"


def token_lock(prefix: str, corp_id: str, agent_id: int | str) -> str:
    """The refresh lock of :func:`token`'s key; same hash tag, so one script holds both."""
    return f"{prefix}:token-lock:{_app_tag(corp_id, agent_id)}"


def _rate_tag(app: str) -> str:
    if not app or "{" in app or "}" in app:
        raise ValueError("app name must be non-empty and free of braces (it is a hash tag)")
    return f"{{{app}}}"


def rate_user(prefix: str, app: str, user: str) -> str:
    """One member's send window for one app (``user:`` keeps ids apart from day counters)."""
    return f"{prefix}:rate:{_rate_tag(app)}:user:{user}"


def rate_day(prefix: str, app: str, day: str) -> str:
    """An app's daily person-times counter; ``day`` is ``yyyymmdd`` on WeCom's clock."""
    return f"{prefix}:rate:{_rate_tag(app)}:day:{day}"


def circuit(prefix: str, app: str) -> str:
    """An app's send circuit: open while WeCom refuses every send of that app."""
    return f"{prefix}:circuit:{_rate_tag(app)}"


def retry(stream: str, group: str) -> str:
    """Deferred deliveries of ``group`` on ``stream``.

    Derived from the stream key rather than the prefix so it shares the stream's hash tag.
    """
    return f"{stream}:retry:{group}"


def order_seq(stream: str, order_key: str) -> str:
    """The sequence counter of one member's entries on ``stream`` (same hash tag as it)."""
    return f"{stream}:oseq:{order_key}"


def order_done(stream: str, group: str, order_key: str) -> str:
    """The highest sequence number of one member that ``group`` committed on ``stream``."""
    return f"{stream}:odone:{group}:{order_key}"
