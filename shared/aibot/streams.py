"""The Redis state of AI-bot streams: written by behaviours, read by the ingress on each poll.

One hash per stream (``names.bot_stream``): ``t`` the text so far, ``f`` finished ("1"),
``s`` the last applied sequence number, ``c`` the start (unix ms). It is created by the
ingress when it accepts the message (``STORE_MESSAGE``: dedup mark, events entry and stream
state in one script call, so a stored message always has its stream) and expires
``stream_ttl`` seconds later, whatever happens to it in between.

Writers number their appends 1, 2, 3 …: an append whose number is not above the last applied
one is a replay (a redelivered handler running again) and is ignored, so a retry does not
repeat text. A finished stream takes no more text; finishing twice is harmless.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Literal, cast

from redis.asyncio import Redis

from shared.bus import names
from shared.bus.scripts import Script

__all__ = [
    "MAX_TEXT_BYTES",
    "STORE_MESSAGE",
    "AppendResult",
    "BotStreams",
    "StreamState",
    "stream_id_for",
]

MAX_TEXT_BYTES = 65_536  # WeCom shows 20480 bytes; the rest only bounds memory
AppendResult = Literal["ok", "replayed", "finished", "missing", "full"]

# KEYS: dedup mark, events stream[, stream state]. ARGV: mark TTL (s), MAXLEN, entry data,
# state TTL (s), now (ms). Returns {entry id or "", text, finished, start} (the state of a
# stream that exists, new or from the first delivery; "" fields when there is none).
STORE_MESSAGE = Script("""
local id = ''
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'data', ARGV[3])
  if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 0 then
    redis.call('HSET', KEYS[3], 't', '', 'f', '0', 's', '0', 'c', ARGV[5])
    redis.call('EXPIRE', KEYS[3], ARGV[4])
  end
end
if not KEYS[3] then return {id, '', '', ''} end
local st = redis.call('HMGET', KEYS[3], 't', 'f', 'c')
return {id, st[1] or '', st[2] or '', st[3] or ''}
""")

# KEYS: stream state. ARGV: sequence, text, finish ("1"/"0"), max bytes.
_APPEND = Script("""
local st = redis.call('HMGET', KEYS[1], 's', 'f')
if not st[1] then return 'missing' end
if st[2] == '1' then return 'finished' end
if tonumber(ARGV[1]) <= tonumber(st[1]) then return 'replayed' end
if redis.call('HSTRLEN', KEYS[1], 't') + string.len(ARGV[2]) > tonumber(ARGV[4]) then
  if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'f', '1', 's', ARGV[1]) end
  return 'full'
end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 't', redis.call('HGET', KEYS[1], 't') .. ARGV[2])
end
redis.call('HSET', KEYS[1], 's', ARGV[1], 'f', ARGV[3])
return 'ok'
""")

# KEYS: stream state. ARGV: text to show when it has none. Ends an unfinished stream (the
# ingress, when no answer came in time); returns {text, finished} or {} when there is none.
_CLOSE = Script("""
local st = redis.call('HMGET', KEYS[1], 't', 'f')
if not st[1] then return {} end
if st[2] ~= '1' then
  if st[1] == '' then st[1] = ARGV[1]; redis.call('HSET', KEYS[1], 't', ARGV[1]) end
  redis.call('HSET', KEYS[1], 'f', '1')
end
return {st[1], '1'}
""")

# KEYS: stream state. ARGV: TTL (s), now (ms).
_START = Script("""
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 't', '', 'f', '0', 's', '0', 'c', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
""")


def stream_id_for(bot: str, msgid: str) -> str:
    """The stream answering one message: the same for every delivery of that message."""
    return hashlib.sha256(f"{bot}\n{msgid}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class StreamState:
    text: str
    finished: bool
    started: float  # unix seconds

    @classmethod
    def from_fields(cls, text: bytes, finished: bytes, started: bytes) -> StreamState:
        return cls(
            text=text.decode(errors="replace"),
            finished=finished == b"1",
            started=int(started or 0) / 1000,
        )


class BotStreams:
    """Reads and writes the streams of every bot under one prefix."""

    def __init__(self, redis: Redis, prefix: str = names.DEFAULT_PREFIX) -> None:
        self.redis = redis
        self.prefix = prefix

    def key(self, bot: str, stream_id: str) -> str:
        return names.bot_stream(self.prefix, bot, stream_id)

    async def append(
        self, bot: str, stream_id: str, seq: int, text: str, *, finish: bool = False
    ) -> AppendResult:
        """Append ``text`` as write number ``seq`` (1, 2, … per answer); ``finish`` ends it."""
        if seq < 1:
            raise ValueError("sequence numbers start at 1")
        result = await _APPEND(
            self.redis,
            [self.key(bot, stream_id)],
            [seq, text.encode(), "1" if finish else "0", MAX_TEXT_BYTES],
        )
        return cast("AppendResult", result.decode())

    async def finish(self, bot: str, stream_id: str, seq: int, text: str = "") -> AppendResult:
        """Append the last ``text`` (may be empty) and end the stream."""
        return await self.append(bot, stream_id, seq, text, finish=True)

    async def read(self, bot: str, stream_id: str) -> StreamState | None:
        """The state as the ingress answers it, or None for an unknown or expired stream."""
        fields = await self.redis.hmget(self.key(bot, stream_id), ["t", "f", "c"])
        text, finished, started = cast("list[bytes | None]", fields)
        if text is None:
            return None
        return StreamState.from_fields(text, finished or b"", started or b"")

    async def close(self, bot: str, stream_id: str, empty_text: str) -> StreamState | None:
        """End an unfinished stream as it is (``empty_text`` if it has none yet)."""
        result = await _CLOSE(self.redis, [self.key(bot, stream_id)], [empty_text.encode()])
        if not result:
            return None
        return StreamState(text=result[0].decode(errors="replace"), finished=True, started=0.0)

    async def start(self, bot: str, stream_id: str, ttl: int) -> None:
        """Create an empty stream unless it exists (the ingress does it in ``STORE_MESSAGE``)."""
        now_ms = int(time.time() * 1000)
        await _START(self.redis, [self.key(bot, stream_id)], [ttl, now_ms])
