"""Conversation memory: each member's recent turns with one behaviour, kept in Redis.

A behaviour that talks (an LLM assistant) needs what was said before. ``Memory`` keeps, per app,
behaviour and member (``names.conversation``), a list of turns — what the member said and what
was answered — bounded three ways: at most ``max_turns`` turns, at most ``max_bytes`` bytes
(oldest turns dropped first; the newest is always kept, its texts cut to fit) and a TTL renewed
by each turn, after which the conversation is forgotten. ``clear`` (the member's ``/reset`` or
``新对话``) deletes it at once.

Every turn carries the id of the event entry that caused it. Appending is one script (check,
push, trim, expire), and a turn whose id is already there is not appended again, so an event
delivered twice never doubles its turn. ``history(exclude=entry_id)`` leaves out the turn of
the event being handled, so a redelivered event sees the conversation as its first delivery did.

One member's words never reach another member: the member is part of the key, and nothing reads
a key but the member's own.
"""

from __future__ import annotations

import time

import msgspec
from redis.asyncio import Redis

from shared.bus import names
from shared.bus.scripts import Script

__all__ = ["Memory", "Turn"]

# KEYS[1] the conversation list; ARGV: id, element, max turns, max bytes, ttl seconds.
# Elements are "<id>\n<json>", so the id check is a prefix compare. Returns 1 if appended.
_APPEND = Script("""
local head = ARGV[1] .. '\\n'
local items = redis.call('LRANGE', KEYS[1], 0, -1)
for _, item in ipairs(items) do
  if string.sub(item, 1, #head) == head then return 0 end
end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
items = redis.call('LRANGE', KEYS[1], 0, -1)
local total = 0
for _, item in ipairs(items) do total = total + #item end
local n = #items
while total > tonumber(ARGV[4]) and n > 1 do
  total = total - #redis.call('LPOP', KEYS[1])
  n = n - 1
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
""")


class Turn(msgspec.Struct, frozen=True, kw_only=True):
    """One exchange: the member's text and the answer, with the event entry id that caused it."""

    id: str
    user: str
    assistant: str
    at: float = 0.0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Turn)


def _cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    data = text.encode()
    return text if len(data) <= limit else data[:limit].decode(errors="ignore")


class Memory:
    """The conversations of one behaviour (its router name), in the bus's Redis."""

    def __init__(
        self,
        redis: Redis,
        behaviour: str,
        *,
        prefix: str = names.DEFAULT_PREFIX,
        max_turns: int = 10,
        max_bytes: int = 16_000,
        ttl: float = 86_400.0,
    ) -> None:
        if max_turns < 1 or max_bytes < 256 or ttl < 1:
            raise ValueError("max_turns >= 1, max_bytes >= 256, ttl >= 1 s")
        names.conversation(prefix, "default", behaviour, "check")  # fail now on a bad name
        self.redis, self.behaviour, self.prefix = redis, behaviour, prefix
        self.max_turns, self.max_bytes, self.ttl = max_turns, max_bytes, int(ttl)

    def __repr__(self) -> str:
        return f"Memory({self.behaviour!r}, turns={self.max_turns}, bytes={self.max_bytes})"

    def key(self, app: str, user: str) -> str:
        return names.conversation(self.prefix, app, self.behaviour, user)

    async def history(self, app: str, user: str, *, exclude: str = "") -> list[Turn]:
        """The member's turns, oldest first; without the turn whose id is ``exclude``."""
        raw: list[bytes | str] = await self.redis.lrange(self.key(app, user), 0, -1)
        turns = []
        for item in raw:
            _, _, data = (item.encode() if isinstance(item, str) else item).partition(b"\n")
            try:
                turn = _decoder.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # written by a newer or broken version: skip it, keep the rest
            if turn.id != exclude:
                turns.append(turn)
        return turns

    async def append(self, app: str, user: str, turn: Turn) -> bool:
        """Add ``turn`` (trimming the oldest); False when a turn with its id is already there."""
        if "\n" in turn.id or not turn.id:
            raise ValueError("a turn id must be non-empty and have no newline")
        half = (self.max_bytes - 200) // 2  # both texts of one turn fit within max_bytes
        stored = msgspec.structs.replace(
            turn,
            user=_cut(turn.user, half),
            assistant=_cut(turn.assistant, half),
            at=turn.at or time.time(),
        )
        element = turn.id.encode() + b"\n" + _encoder.encode(stored)
        args: list[str | bytes | int] = [turn.id, element, self.max_turns, self.max_bytes, self.ttl]
        return bool(await _APPEND(self.redis, [self.key(app, user)], args))

    async def clear(self, app: str, user: str) -> bool:
        """Forget the member's conversation; True if there was one."""
        return bool(await self.redis.delete(self.key(app, user)))
