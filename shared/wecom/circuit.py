"""The per-app send circuit: when WeCom refuses an app as a whole, that app's sends pause.

Two kinds of refusal are about the app, not about one message:

- **45009** (rate limit): WeCom blocks the app for 60 s, an hour or the rest of its day. The
  circuit opens for the first wait; if the probe after it meets 45009 again the next wait is
  longer (by default 60 s, then an hour, then until WeCom's midnight, UTC+8).
- **configuration errors** (:data:`CONFIG_ERRCODES`: untrusted IP 60020, wrong Secret 40001,
  wrong CorpID 40013, no API permission 48002, app disabled 50003, wrong app 301002, wrong
  AgentID 40056): nothing goes through until someone fixes the setting. The circuit stays open
  and lets one probe through every ``probe_interval`` seconds.

While open, sends of that app are not tried and not dead-lettered: the sender parks them in the
delayed queue until the circuit's ``until``. At ``until`` exactly one send (across all replicas)
becomes the probe; its success closes the circuit, a repeated refusal reopens it. Other apps are
not affected.

One Redis hash per app, ``names.circuit(prefix, app)`` (times in unix ms)::

    state open · reason rate_limited|config · errcode · advice · since · until · level
    probe (lease end while a probe is in flight)

No key means closed. Every change is one Lua script on that one key.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final, Literal

import msgspec
from redis.asyncio import Redis

from shared.bus import names
from shared.bus.scripts import Script

__all__ = [
    "ADMIT",
    "ADMIT_LUA",
    "CONFIG_ERRCODES",
    "RATE_ERRCODES",
    "CircuitState",
    "admit_call",
    "close",
    "read",
    "release_probe",
    "trip",
]

RATE_ERRCODES: Final = frozenset({45009})
CONFIG_ERRCODES: Final = frozenset({60020, 40001, 40013, 48002, 50003, 301002, 40056})

Reason = Literal["rate_limited", "config"]

# The admission as a Lua function, so that the sender's gate script runs the same code.
# key: the circuit.  now ms, probe lease ms, wait ms while another send is the probe.
# 0: closed, go.  -1: go, and this send is the probe.  n > 0: wait n ms.
ADMIT_LUA: Final = """
local function circuit_admit(key, now, lease, recheck)
  local untl = redis.call('HGET', key, 'until')
  if not untl then return 0 end
  if now < tonumber(untl) then return tonumber(untl) - now end
  local probe = tonumber(redis.call('HGET', key, 'probe') or '0')
  if probe > now then return math.min(probe - now, recheck) end
  redis.call('HSET', key, 'probe', now + lease)
  return -1
end
"""

# KEYS[1] circuit.  ARGV: now ms, probe lease ms, wait ms while another send is the probe.
ADMIT: Final = Script(
    ADMIT_LUA
    + "return circuit_admit(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))"
)

# KEYS[1] circuit.  ARGV: now ms, reason, errcode, advice, probe (1/0), waits ms (comma list).
# Opens a closed circuit at the first wait; a failed probe reopens it at the next wait (the
# last repeats). A send admitted before the circuit opened changes nothing.  1: changed, 0: not.
_TRIP: Final = Script("""
local now, open = tonumber(ARGV[1]), redis.call('EXISTS', KEYS[1]) == 1
if open and ARGV[5] ~= '1' then return 0 end
local waits = {}
for w in string.gmatch(ARGV[6], '[^,]+') do waits[#waits + 1] = tonumber(w) end
local level = 1
if open then level = tonumber(redis.call('HGET', KEYS[1], 'level') or '0') + 1 end
local wait = waits[math.min(level, #waits)]
if not open then redis.call('HSET', KEYS[1], 'since', now) end
redis.call('HSET', KEYS[1], 'state', 'open', 'reason', ARGV[2], 'errcode', ARGV[3],
  'advice', ARGV[4], 'until', now + wait, 'level', level)
redis.call('HDEL', KEYS[1], 'probe')
redis.call('PEXPIRE', KEYS[1], wait + 86400000)
return 1
""")


class CircuitState(msgspec.Struct, frozen=True, kw_only=True):
    """What ``wecom-bus check`` and the console show for one app's circuit.

    ``state``: ``closed`` (sending), ``open`` (paused until ``until``), ``probing`` (``until``
    passed; one send is testing whether WeCom accepts the app again). ``reason`` is
    ``rate_limited`` (45009) or ``config``; ``errcode`` and ``advice`` are WeCom's refusal and
    what to do about it; ``since`` and ``until`` are unix seconds; ``level`` counts the
    refusals in a row (it picks the next wait).
    """

    app: str
    state: Literal["closed", "open", "probing"] = "closed"
    reason: Reason | None = None
    errcode: int | None = None
    advice: str | None = None
    since: float | None = None
    until: float | None = None
    level: int = 0


async def read(redis: Redis, prefix: str, app: str, *, now: float | None = None) -> CircuitState:
    """The circuit of ``app`` as it stands in Redis (one HGETALL)."""
    raw = await redis.hgetall(names.circuit(prefix, app))
    fields = {_text(k): _text(v) for k, v in raw.items()}
    if "until" not in fields:
        return CircuitState(app=app)
    until_ms = float(fields["until"])
    at = time.time() if now is None else now
    reason = fields.get("reason")
    return CircuitState(
        app=app,
        state="open" if at * 1000 < until_ms else "probing",
        reason="config" if reason == "config" else "rate_limited",
        errcode=int(fields["errcode"]) if fields.get("errcode", "").lstrip("-").isdigit() else None,
        advice=fields.get("advice") or None,
        since=float(fields["since"]) / 1000 if "since" in fields else None,
        until=until_ms / 1000,
        level=int(fields.get("level", "0") or 0),
    )


def admit_call(
    prefix: str, app: str, now: float, lease: float, recheck: float = 1.0
) -> tuple[list[str], list[int]]:
    """Keys and args of :data:`ADMIT`, for a caller that pipelines it with other calls.

    ``lease``: how long a probe may take before another send probes instead; ``recheck``:
    how soon the other sends ask again while a probe is under way.
    """
    args = [round(now * 1000), round(lease * 1000), max(1, round(recheck * 1000))]
    return [names.circuit(prefix, app)], args


async def trip(
    redis: Redis,
    prefix: str,
    app: str,
    *,
    reason: Reason,
    errcode: int,
    advice: str,
    probe: bool,
    waits: Sequence[float],
    now: float,
) -> bool:
    """Record WeCom's refusal of ``app``; True when the circuit opened or reopened just now."""
    args = [
        round(now * 1000),
        reason,
        errcode,
        advice,
        1 if probe else 0,
        ",".join(str(max(1, round(w * 1000))) for w in waits),
    ]
    return bool(await _TRIP(redis, [names.circuit(prefix, app)], args))


async def release_probe(redis: Redis, prefix: str, app: str) -> None:
    """The probe met a transient failure (it proves nothing): let the next send probe now."""
    await redis.hdel(names.circuit(prefix, app), "probe")


async def close(redis: Redis, prefix: str, app: str) -> bool:
    """Close the circuit after a successful probe; True when it was open."""
    return bool(await redis.delete(names.circuit(prefix, app)))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
