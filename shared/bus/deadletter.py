"""Dead letters as a library: list them, replay them to the group that failed them, drop them.

The consumer runtime moves an entry it cannot process to ``<prefix>:deadletter`` (fields
``stream``, ``group``, ``id``, ``attempts``, ``error``, ``data``, ``time``, ``consumer``; see
``shared.bus.worker``). ``DeadLetters`` reads those entries as typed ``DeadLetter`` records and
is what ``wecom-bus deadletter`` and the operator console call::

    letters = DeadLetters(redis, prefix)
    for letter in await letters.list(group="sender", reason="60020"):
        print(letter.entry_id, letter.errcode, letter.advice)
    result = await letters.replay([letter.id for letter in ...])

**Replay goes to the failing group only.** The original entry is made pending again for that
group (``XCLAIM … FORCE``, long idle, delivery count 0), so the next claim round of any replica
of that group delivers it again under its original entry id: other groups do not see it twice,
and ids derived from the entry id (the send request ids) stay the same, so a request already
sent is not sent again. Only if the original was trimmed from its stream since is the payload
added again as a new entry (then every group of that stream sees it). The claim, the fallback
and the removal of the dead letter are one script, so a replay is done once or not at all.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, Literal, TypedDict, Unpack, cast

import msgspec
from redis.asyncio import Redis

from shared.bus import names
from shared.bus.scripts import Args, Keys, Script

__all__ = [
    "REPLAY_CONSUMER",
    "DeadLetter",
    "DeadLetters",
    "ReplayOutcome",
    "ReplayResult",
    "Replayed",
    "Where",
]

REPLAY_CONSUMER = "deadletter-replay"
# Idle time given to a replayed entry: longer than any claim threshold, so the next claim
# round of whichever replica of the group runs first takes it.
_REPLAY_IDLE_MS = 86_400_000
_PAGE = 200
_ENTRY_ID = re.compile(r"\d{1,20}(-\d{1,20})?")
_ERRCODE = re.compile(r"\berrcode (-?\d+)\b:?\s*")

ReplayOutcome = Literal["pending", "readded", "missing", "nogroup"]

# KEYS[1] dead-letter stream, KEYS[2] the original stream.
# ARGV: dead-letter id, consumer, idle ms, maxlen for a re-add ('' = none).
# Returns {outcome, entry id now pending (or '')}.
_REPLAY = Script("""
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return {'missing', ''} end
local f, kv = {}, found[1][2]
for i = 1, #kv, 2 do f[kv[i]] = kv[i + 1] end
if f['stream'] ~= KEYS[2] then return redis.error_reply('ERR not from this stream') end
local ok, claimed = pcall(redis.call, 'XCLAIM', KEYS[2], f['group'], ARGV[2], 0, f['id'],
  'IDLE', ARGV[3], 'RETRYCOUNT', 0, 'FORCE', 'JUSTID')
if not ok then return {'nogroup', ''} end
local outcome, id = 'pending', f['id']
if #claimed == 0 then
  local cmd = {'XADD', KEYS[2]}
  if ARGV[4] ~= '' then cmd[#cmd + 1] = 'MAXLEN'; cmd[#cmd + 1] = '~'; cmd[#cmd + 1] = ARGV[4] end
  cmd[#cmd + 1] = '*'; cmd[#cmd + 1] = 'data'; cmd[#cmd + 1] = f['data'] or '{}'
  id = redis.call(unpack(cmd))
  outcome = 'readded'
end
redis.call('XDEL', KEYS[1], ARGV[1])
return {outcome, id}
""")


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One dead letter.

    ``id`` is the dead letter's own entry id (what replay and drop take); ``entry_id`` the
    failed entry's id in ``stream``. ``reason`` is the runtime's one-line error; ``errcode`` and
    ``advice`` are WeCom's code and the operator sentence when the failure was a WeCom refusal.
    ``data`` is the entry's payload decoded from JSON (its text when it is not JSON).
    """

    id: str
    time: float
    stream: str
    group: str
    entry_id: str
    attempts: int
    reason: str
    errcode: int | None = None
    advice: str | None = None
    consumer: str = ""
    data: Any = None


class Replayed(msgspec.Struct, frozen=True, kw_only=True):
    """What replay did with one dead letter.

    ``pending``: the original entry is pending again for ``group``; ``readded``: the original
    was trimmed, the payload is on ``stream`` again as ``entry_id``; ``missing``: no such dead
    letter (already replayed or dropped); ``nogroup``: the group or stream no longer exists, the
    dead letter is kept.
    """

    id: str
    outcome: ReplayOutcome
    stream: str = ""
    group: str = ""
    entry_id: str = ""


class ReplayResult(msgspec.Struct, frozen=True):
    items: list[Replayed]

    @property
    def replayed(self) -> list[Replayed]:
        return [r for r in self.items if r.outcome in ("pending", "readded")]

    @property
    def missing(self) -> list[str]:
        return [r.id for r in self.items if r.outcome == "missing"]


def _text(value: bytes | None) -> str:
    return value.decode(errors="replace") if value is not None else ""


def _decode_data(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return _text(raw)


def _float(value: bytes | None) -> float:
    try:
        return float(_text(value) or 0)
    except ValueError:
        return 0.0


def _int(value: bytes | None) -> int | None:
    text = _text(value).strip()
    return int(text) if re.fullmatch(r"-?\d+", text) else None


def _parse(entry_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetter:
    """A stream entry as a record. ``errcode``/``advice`` fields win when the writer set them;
    otherwise they are read from the reason (the sender's "errcode N: advice")."""
    reason = _text(fields.get(b"error"))
    errcode, advice = _int(fields.get(b"errcode")), _text(fields.get(b"advice")) or None
    match = _ERRCODE.search(reason)
    if match and errcode is None:
        errcode = int(match.group(1))
    if match and advice is None:
        advice = reason[match.end() :].strip() or None
    return DeadLetter(
        id=entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
        time=_float(fields.get(b"time")),
        stream=_text(fields.get(b"stream")),
        group=_text(fields.get(b"group")),
        entry_id=_text(fields.get(b"id")),
        attempts=_int(fields.get(b"attempts")) or 0,
        reason=reason,
        errcode=errcode,
        advice=advice,
        consumer=_text(fields.get(b"consumer")),
        data=_decode_data(fields.get(b"data")),
    )


def _check_ids(ids: Iterable[str]) -> list[str]:
    """Entry ids as given, de-duplicated in order; ValueError names the first malformed one."""
    wanted = list(dict.fromkeys(ids))
    for entry_id in wanted:
        if not _ENTRY_ID.fullmatch(entry_id):
            raise ValueError(f"{entry_id!r} is not a stream entry id (like 1700000000000-0)")
    return wanted


class Where(TypedDict, total=False):
    """Filters of :meth:`DeadLetters.list` and :meth:`DeadLetters.scan`, combined with AND.

    ``group`` and ``stream`` match exactly; ``reason`` is a case-insensitive substring of the
    reason; ``since`` (unix seconds) keeps letters dead-lettered at or after that time;
    ``after`` (a dead-letter id) starts just after it: the last id of the previous page.
    """

    group: str | None
    stream: str | None
    reason: str | None
    since: float | None
    after: str | None


class DeadLetters:
    """The dead-letter stream of one ``BUS_PREFIX``.

    Ids are dead-letter ids (``DeadLetter.id``); a malformed one raises ValueError naming it.
    """

    def __init__(
        self, redis: Redis, prefix: str = names.DEFAULT_PREFIX, *, maxlen: int | None = None
    ) -> None:
        self.redis = redis
        self.key = names.deadletter(prefix)
        self.maxlen = maxlen  # MAXLEN ~ for a payload added again; None: no trimming

    def __repr__(self) -> str:
        return f"DeadLetters({self.key!r})"

    async def count(self) -> int:
        """How many dead letters there are, unfiltered."""
        return int(await self.redis.xlen(self.key))

    async def get(self, dead_letter_id: str) -> DeadLetter | None:
        [wanted] = _check_ids([dead_letter_id])
        found: Any = await self.redis.xrange(self.key, wanted, wanted)
        return _parse(*found[0]) if found else None

    async def scan(self, **where: Unpack[Where]) -> AsyncIterator[DeadLetter]:
        """Every dead letter matching ``where`` (see :class:`Where`), oldest first, by pages."""
        after, since = where.get("after"), where.get("since")
        group, stream, reason = where.get("group"), where.get("stream"), where.get("reason")
        start = f"({_check_ids([after])[0]}" if after else "-"
        if since is not None and not after:
            start = str(max(0, int(since * 1000)))  # entry ids begin with their ms time
        needle = reason.casefold() if reason else None
        while True:
            page: Any = await self.redis.xrange(self.key, start, "+", count=_PAGE)
            for entry_id, fields in page:
                letter = _parse(entry_id, fields)
                if (
                    (group is None or letter.group == group)
                    and (stream is None or letter.stream == stream)
                    and (needle is None or needle in letter.reason.casefold())
                    and (since is None or letter.time >= since)
                ):
                    yield letter
            if len(page) < _PAGE:
                return
            start = f"({_text(page[-1][0])}"

    async def list(
        self, *, limit: int | None = 100, **where: Unpack[Where]
    ) -> builtins.list[DeadLetter]:
        """Dead letters matching ``where``, oldest first, at most ``limit`` (None: all)."""
        found: builtins.list[DeadLetter] = []
        if limit is not None and limit <= 0:
            return found
        async for letter in self.scan(**where):
            found.append(letter)
            if limit is not None and len(found) >= limit:
                break
        return found

    async def replay(self, ids: Iterable[str]) -> ReplayResult:
        """Give each dead letter's entry back to the group that failed it (see module doc)."""
        wanted = _check_ids(ids)
        letters = {letter.id: letter for letter in await self._fetch(wanted)}
        maxlen = "" if self.maxlen is None else str(self.maxlen)
        calls: builtins.list[tuple[Keys, Args]] = [
            ([self.key, letter.stream], [i, REPLAY_CONSUMER, _REPLAY_IDLE_MS, maxlen])
            for i, letter in letters.items()
        ]
        answers = iter(await _REPLAY.run_batch(self.redis, calls))
        items: builtins.list[Replayed] = []
        for i in wanted:
            letter = letters.get(i)
            if letter is None:
                items.append(Replayed(id=i, outcome="missing"))
                continue
            answer = next(answers)
            if isinstance(answer, Exception):
                raise answer
            outcome, now_pending = (_text(part) for part in answer)
            items.append(
                Replayed(
                    id=i,
                    outcome=cast("ReplayOutcome", outcome),
                    stream=letter.stream,
                    group=letter.group,
                    entry_id=now_pending,
                )
            )
        return ReplayResult(items)

    async def drop(self, ids: Iterable[str]) -> builtins.list[str]:
        """Delete dead letters for good; returns the ids that existed (and are gone now)."""
        wanted = _check_ids(ids)
        if not wanted:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in wanted:
            pipe.xdel(self.key, entry_id)
        removed = await pipe.execute()
        return [i for i, n in zip(wanted, removed, strict=True) if n]

    async def _fetch(self, ids: Sequence[str]) -> builtins.list[DeadLetter]:
        """The dead letters that exist among ``ids``, in one round trip."""
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(self.key, entry_id, entry_id)
        return [_parse(*found[0]) for found in await pipe.execute() if found]
