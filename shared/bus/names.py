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
``<prefix>:seen:bot:<bot>:<key>``           string  AI-bot callback dedup mark (TTL as apps')
``<prefix>:botstream:<bot>:<stream id>``    hash    an AI bot's streamed answer: text so far,
                                                    finished flag, last sequence, start (TTL)
``<prefix>:botresponse:<digest>``           string  a response_url used (its answer; TTL 1 h)
``<prefix>:conv:{<app>}:<router>:<user>``   list    a member's recent turns with one behaviour
                                                    (its router's name); bounded, TTL
``<prefix>:gwrate:{<corp>}:<api>:<window>``  string  gateway calls of one corp to one API in one
                                                    minute or hour window (TTL: the window)
``<prefix>:upload:<request id>``            string  the media_id an attachment was uploaded as
                                                    (TTL 3 days, media's life)
``<prefix>:dir:{<app>}:users``              hash    the directory copy: userid → member JSON
``<prefix>:dir:{<app>}:departments``        hash    the directory copy: id → department JSON
``<prefix>:stats:<kind>:<minute>``          hash    per-minute counters for the console
                                                    (``<app>|<name>`` → count; TTL 2 h)
==========================================  ======  =============================================

Nothing else builds a key: ``tests/test_names.py`` fails when a key is formatted elsewhere.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_PREFIX",
    "RESPONDER_GROUP",
    "SENDER_GROUP",
    "bot_response",
    "bot_seen",
    "bot_stream",
    "circuit",
    "conversation",
    "deadletter",
    "delayed",
    "delayed_data",
    "directory_departments",
    "directory_users",
    "events",
    "gateway_rate",
    "idempotency",
    "outbox",
    "rate_day",
    "rate_user",
    "retry",
    "seen",
    "sent",
    "sent_part",
    "stats",
    "status",
    "token",
    "token_lock",
    "upload",
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


def bot_seen(prefix: str, bot: str, key: str) -> str:
    """Callback dedup mark of one AI bot (``bot:`` sets it apart: app names hold no colon)."""
    return seen(prefix, f"bot:{bot}", key)


def bot_stream(prefix: str, bot: str, stream_id: str) -> str:
    """The state of one streamed answer of an AI bot, read by the ingress on each refresh poll."""
    return f"{prefix}:botstream:{bot}:{stream_id}"


def bot_response(prefix: str, digest: str) -> str:
    """Marks a bot's response_url as used (WeCom accepts one call per URL)."""
    return f"{prefix}:botresponse:{digest}"


def conversation(prefix: str, app: str, behaviour: str, user: str) -> str:
    """One member's recent turns with one behaviour of one app (shared.bus.memory).

    The app, the behaviour and the member are all in the key, so no conversation is shared.
    """
    if not behaviour or ":" in behaviour:
        raise ValueError("behaviour must be non-empty and free of ':'")
    if not user:
        raise ValueError("user must be non-empty")
    return f"{prefix}:conv:{_rate_tag(app)}:{behaviour}:{user}"


def gateway_rate(prefix: str, corp_id: str, api: str, window: str) -> str:
    """Calls the gateway made for one corp to one API in one window (``m<n>`` or ``h<n>``)."""
    return f"{prefix}:gwrate:{{{corp_id}}}:{api}:{window}"


def upload(prefix: str, request_id: str) -> str:
    """The media_id an outbox attachment was uploaded as, so a redelivery reuses it."""
    return f"{prefix}:upload:{request_id}"


def directory_users(prefix: str, app: str) -> str:
    """The directory copy of the members an app sees: userid → user/get JSON."""
    return f"{prefix}:dir:{_rate_tag(app)}:users"


def directory_departments(prefix: str, app: str) -> str:
    """The directory copy of the departments an app sees: id → department JSON."""
    return f"{prefix}:dir:{_rate_tag(app)}:departments"


def stats(prefix: str, kind: str, minute: int) -> str:
    """One minute's counters of ``kind`` (``callbacks``, ``sends``); ``minute`` = unix s // 60."""
    return f"{prefix}:stats:{kind}:{minute}"
