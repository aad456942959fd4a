"""The send governor: WeCom's per-member rate limits, shared by every sender replica via Redis.

WeCom silently drops app messages past 30 per minute or 1000 per hour per member per app, and
caps each app at a daily number of person-times (seats × 200). ``Governor.acquire`` admits a send
only when every recipient has room in both sliding windows (and the app in its daily quota), in
one Lua script, so several sender processes never admit more than the limits together.

Keys (``{app}`` is a hash tag, so all of one app's keys share a Redis Cluster slot)::

    <prefix>:rate:{<app>}:user:<userid>    zset    request id -> admission time (unix ms)
    <prefix>:rate:{<app>}:day:<yyyymmdd>   string  person-times admitted on that WeCom day

User keys carry a ``user:`` segment so that no user id can collide with a day counter.

What is counted: only explicit ``touser`` ids, lower-cased (WeCom user ids are
case-insensitive and WeCom lower-cases them in replies). ``@all`` is one pseudo-member ``@all``
(at most 30 broadcasts a minute per app); members reached through ``@all``, ``toparty`` or
``totag`` are not known here, so their individual windows and the daily quota do not see them.

Time: the caller's clock (``time.time`` by default), not Redis ``TIME``, is the one clock of
record. It keeps tests deterministic and lets the WeCom day be computed in Python; replicas must
run NTP, and ``margin`` widens both windows to absorb clock skew and the delay between
admission and WeCom receiving the request (WeCom counts at its own receive time). Times are
whole milliseconds because Lua turns numbers into strings with 14 significant digits.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone

from redis.asyncio import Redis

from shared.bus import names
from shared.bus.scripts import Script
from shared.wecom.metrics import GOVERNOR_DELAYS

__all__ = [
    "ACQUIRE",
    "ACQUIRE_LUA",
    "ALL",
    "WECOM_TZ",
    "Governor",
    "counted_members",
    "seconds_to_midnight",
]

ALL = "@all"
# WeCom's day is Beijing time; China has had no daylight saving since 1991, so a fixed offset
# is exact and needs no tz database.
WECOM_TZ = timezone(timedelta(hours=8), "Asia/Shanghai")

_DAY_MS = 86_400_000
_OFFSET_MS = 8 * 3_600_000

# The admission as a Lua function of (keys, argv), so that the sender's gate script runs the
# same code.  keys: the members' zsets..., the day counter.
# argv: now, request id, minute span, per minute, hour span, per hour, daily quota (0 = off),
#       ms to the next WeCom midnight, zset TTL, day counter TTL.   All times in ms.
# Returns 0 when admitted (and recorded), else the ms until every member would have room.
ACQUIRE_LUA = """
local function governor_acquire(keys, argv)
  local now, member = tonumber(argv[1]), argv[2]
  local windows = {{tonumber(argv[3]), tonumber(argv[4])}, {tonumber(argv[5]), tonumber(argv[6])}}
  local quota, to_midnight = tonumber(argv[7]), tonumber(argv[8])
  local n = #keys - 1
  local longest = math.max(windows[1][1], windows[2][1])

  -- When will (t - span, t] hold fewer than `limit` entries besides this request's own
  -- (`own`: its score, or false)? Its own record never counts against it: re-acquiring a
  -- request does not count it twice.
  local function room_at(key, own, span, limit)
    local from = '(' .. (now - span)
    local count = redis.call('ZCOUNT', key, from, '+inf')
    if own and tonumber(own) > now - span then count = count - 1 end
    if count < limit then return now end
    -- the (count - limit + 1)-th oldest other entry has to leave the window
    local k, seen = count - limit + 1, 0
    local entries = redis.call('ZRANGEBYSCORE', key, from, '+inf', 'WITHSCORES', 'LIMIT', 0, k + 1)
    for i = 1, #entries, 2 do
      if entries[i] ~= member then
        seen = seen + 1
        if seen == k then return tonumber(entries[i + 1]) + span end
      end
    end
    return now + span
  end

  local wait, fresh = 0, 0
  for i = 1, n do
    redis.call('ZREMRANGEBYSCORE', keys[i], '-inf', now - longest)
    local own = redis.call('ZSCORE', keys[i], member)
    if not own then fresh = fresh + 1 end
    for _, w in ipairs(windows) do
      wait = math.max(wait, room_at(keys[i], own, w[1], w[2]) - now)
    end
  end
  if quota > 0 and fresh > 0 then
    local used = tonumber(redis.call('GET', keys[n + 1]) or '0')
    if used + fresh > quota then wait = math.max(wait, to_midnight) end
  end
  if wait > 0 then return wait end

  for i = 1, n do
    redis.call('ZADD', keys[i], now, member)
    redis.call('PEXPIRE', keys[i], argv[9])
  end
  if fresh > 0 then
    redis.call('INCRBY', keys[n + 1], fresh)
    redis.call('PEXPIRE', keys[n + 1], argv[10])
  end
  return 0
end
"""

# KEYS and ARGV: those of governor_acquire.
ACQUIRE = Script(ACQUIRE_LUA + "return governor_acquire(KEYS, ARGV)")

# KEYS: the members' zsets..., today's counter.  ARGV: request id, start of today (ms).
# Records from before today stay out of today's counter: yesterday's quota no longer matters.
_RELEASE = Script("""
local n, today, removed = #KEYS - 1, 0, 0
for i = 1, n do
  local score = redis.call('ZSCORE', KEYS[i], ARGV[1])
  if score then
    redis.call('ZREM', KEYS[i], ARGV[1])
    removed = removed + 1
    if tonumber(score) >= tonumber(ARGV[2]) then today = today + 1 end
  end
end
local used = tonumber(redis.call('GET', KEYS[n + 1]) or '0')
if math.min(used, today) > 0 then redis.call('DECRBY', KEYS[n + 1], math.min(used, today)) end
return removed
""")


def counted_members(touser: str | None) -> list[str]:
    """The members a ``touser`` value ("u1|u2", "@all") is counted against, normalised.

    Lower-cased, blanks and duplicates dropped, order kept; ``@all`` anywhere means only
    ``["@all"]`` (WeCom ignores the other recipients then).
    """
    members: dict[str, None] = {}
    for part in (touser or "").split("|"):
        user = part.strip().lower()
        if user == ALL:
            return [ALL]
        if user:
            members[user] = None
    return list(members)


class Governor:
    """Admission control for ``message/send``, per member per app, across all replicas.

    ``acquire`` before sending: 0.0 means go (the send is recorded), a positive number is the
    seconds to wait before asking again (nothing was recorded). ``release`` undoes a record
    when WeCom refused the send outright (e.g. errcode 81013), so it never counted.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = names.DEFAULT_PREFIX,
        per_minute: int = 30,
        per_hour: int = 1000,
        daily_quota: int = 0,
        clock: Callable[[], float] = time.time,
        margin: float = 0.0,
    ) -> None:
        if per_minute < 1 or per_hour < 1:
            raise ValueError("per_minute and per_hour must be at least 1")
        if daily_quota < 0 or margin < 0:
            raise ValueError("daily_quota and margin must not be negative")
        self.prefix = prefix
        self.per_minute = per_minute
        self.per_hour = per_hour
        self.daily_quota = daily_quota
        self.clock = clock
        margin_ms = math.ceil(margin * 1000)
        self._minute_ms = 60_000 + margin_ms
        self._hour_ms = 3_600_000 + margin_ms
        self._redis = redis

    def __repr__(self) -> str:
        return (
            f"Governor(prefix={self.prefix!r}, per_minute={self.per_minute}, "
            f"per_hour={self.per_hour}, daily_quota={self.daily_quota})"
        )

    def user_key(self, app: str, user: str) -> str:
        return names.rate_user(self.prefix, app, user.lower())

    def day_key(self, app: str, day: str) -> str:
        """The daily counter of ``app`` for ``day`` as ``yyyymmdd`` (WeCom's day, UTC+8)."""
        return names.rate_day(self.prefix, app, day)

    async def acquire(self, app: str, users: Sequence[str], request_id: str) -> float:
        """Admit and record one send to ``users`` (all or nothing); 0.0, or seconds to wait.

        Idempotent per ``request_id``: a request already recorded for a member is not counted
        again (its record moves to now, the time of this attempt).
        """
        call = self.acquire_call(app, users, request_id)
        if call is None:
            return 0.0  # toparty/totag only: nothing we can count
        return self.wait_from(app, await ACQUIRE(self._redis, *call))

    def acquire_call(
        self, app: str, users: Sequence[str], request_id: str
    ) -> tuple[list[str], tuple[int | str, ...]] | None:
        """Keys and args of :data:`ACQUIRE` (for a caller that pipelines it), or None when
        nobody is counted; read its result with :meth:`wait_from`."""
        members = _normalise(users)
        if not members:
            return None
        now_ms = round(self.clock() * 1000)
        start_ms, day = _wecom_day(now_ms)
        to_midnight = start_ms + _DAY_MS - now_ms
        keys = [self.user_key(app, user) for user in members]
        keys.append(self.day_key(app, day))
        args = (
            now_ms,
            request_id,
            self._minute_ms,
            self.per_minute,
            self._hour_ms,
            self.per_hour,
            self.daily_quota,
            to_midnight,
            self._hour_ms + 60_000,  # slightly over the hour: idle members cost nothing
            to_midnight + 3_600_000,
        )
        return keys, args

    def wait_from(self, app: str, result: object) -> float:
        """Seconds to wait from an :data:`ACQUIRE` result (0.0: admitted)."""
        wait_ms = int(str(result))
        if wait_ms > 0:
            GOVERNOR_DELAYS.labels(app=app).inc()
        return wait_ms / 1000

    async def release(self, app: str, users: Sequence[str], request_id: str) -> int:
        """Forget the records of ``request_id``; returns how many members had one."""
        members = _normalise(users)
        if not members:
            return 0
        start_ms, day = _wecom_day(round(self.clock() * 1000))
        keys = [self.user_key(app, user) for user in members]
        keys.append(self.day_key(app, day))
        return int(await _RELEASE(self._redis, keys, (request_id, start_ms)))

    async def used_today(self, app: str) -> int:
        """Person-times admitted for ``app`` so far on the current WeCom day (for metrics)."""
        _, day = _wecom_day(round(self.clock() * 1000))
        value = await self._redis.get(self.day_key(app, day))
        return int(value or 0)


def _normalise(users: Sequence[str]) -> list[str]:
    if isinstance(users, str):  # a bare "u1|u2" would otherwise be counted per character
        return counted_members(users)
    return counted_members("|".join(users))


def seconds_to_midnight(now: float) -> float:
    """Seconds from ``now`` (unix) to the end of WeCom's day (midnight UTC+8)."""
    now_ms = round(now * 1000)
    start_ms, _ = _wecom_day(now_ms)
    return (start_ms + _DAY_MS - now_ms) / 1000


def _wecom_day(now_ms: int) -> tuple[int, str]:
    """Start (unix ms) and ``yyyymmdd`` of the WeCom day holding ``now_ms``."""
    start_ms = (now_ms + _OFFSET_MS) // _DAY_MS * _DAY_MS - _OFFSET_MS
    return start_ms, _day_name(start_ms)


@functools.lru_cache(maxsize=4)  # a send asks for the same day as the one before
def _day_name(start_ms: int) -> str:
    return datetime.fromtimestamp(start_ms / 1000, WECOM_TZ).strftime("%Y%m%d")
