"""Where a send request stands: what ``GET /v1/messages/{id}`` answers, kept in one Redis hash.

``enqueue`` writes ``queued``; the sender moves the request to ``delayed`` (waiting for a
rate-limit slot, a retry or an app's circuit, with ``until``), ``sent`` (WeCom's msgid and
response_code) or ``dead`` (WeCom's errcode and a sentence of advice). The hash is
``names.status(prefix, id)`` and lives seven days, like the ``sent:<id>`` mark. It also counts
the attempts at each part (``try<k>``), which is how the sender knows a request may already have
reached WeCom even after it went through the delayed queue and came back as a new entry.

Ids never accepted have no hash: the API answers 404 for them.
"""

from __future__ import annotations

import json
import time
from typing import Literal

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared.bus import names
from shared.bus.scripts import Script

__all__ = [
    "RECORD",
    "RECORD_LUA",
    "STATUS_TTL",
    "MessageState",
    "accepted",
    "attempt",
    "attempts_field",
    "dead",
    "delayed",
    "read",
    "record_call",
    "sent",
]

STATUS_TTL = 7 * 86_400  # as long as the sent mark: recall is possible for 24 h, cards 72 h


class MessageState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One request's state, as the API returns it (fields that do not apply are left out)."""

    id: str
    status: Literal["queued", "delayed", "sent", "dead"]
    until: float | None = None  # delayed: unix time it is tried again
    reason: str | None = None  # delayed: why (rate limit, retry, circuit)
    msgid: str | None = None  # sent: WeCom's msgid (of the first part, when split)
    response_code: str | None = None  # sent: for template card updates
    msgids: list[str] | None = None  # sent in parts: every part's msgid, in order
    errcode: int | None = None  # dead, or delayed by WeCom's refusal
    advice: str | None = None


def accepted(pipe: Pipeline, prefix: str, request_id: str) -> None:
    """Queue the ``queued`` state of a request just put on the outbox, unless the sender was
    quicker and wrote a later state already."""
    key = names.status(prefix, request_id)
    pipe.hsetnx(key, "state", "queued")
    pipe.expire(key, STATUS_TTL)


def attempts_field(part: int) -> str:
    """The status hash field counting the attempts at ``part`` (read it with HGET)."""
    return f"try{part}"


def attempt(pipe: Pipeline, prefix: str, request_id: str, part: int) -> None:
    """Queue the count of one more attempt at ``part``, with the write of its outcome.

    An attempt cut short (a crash, a timeout) is not counted here, but its entry stays pending
    and comes back with a delivery count above one, which tells the same.
    """
    key = names.status(prefix, request_id)
    pipe.hincrby(key, attempts_field(part), 1)
    pipe.expire(key, STATUS_TTL)


# A send's outcome in one script: the attempt counted, the part's sent mark, and after the last
# part the request's state (and, split, its own mark). What attempt() and sent() queue, atomic.
# keys: the status hash, the part's sent mark, then (split, last part) the request's mark.
# argv: the attempts field, the part's record, the marks' TTL, the hash's TTL, then (last part)
#       the msgids (JSON), the response_code and (split) the request's record.
# A function, so that the sender's record of a last send can ack its entry in the same script.
RECORD_LUA = """
local function send_record(keys, argv)
  redis.call('HINCRBY', keys[1], argv[1], 1)
  redis.call('SET', keys[2], argv[2], 'EX', argv[3])
  if #argv > 4 then
    if keys[3] then redis.call('SET', keys[3], argv[7], 'EX', argv[3]) end
    redis.call('HSET', keys[1], 'state', 'sent', 'msgids', argv[5], 'response_code', argv[6])
    redis.call('HDEL', keys[1], 'until', 'reason', 'errcode', 'advice')
  end
  redis.call('EXPIRE', keys[1], argv[4])
end
"""
RECORD = Script(RECORD_LUA + "send_record(KEYS, ARGV)\nreturn 1\n")


def record_call(
    prefix: str,
    request_id: str,
    part: int,
    mark: tuple[str, bytes],
    ttl: int,
    done: tuple[list[str], str, tuple[str, bytes] | None] | None,
) -> tuple[list[str], list[str | bytes | int]]:
    """Keys and args of :data:`RECORD`: ``mark`` is the part's (key, record); ``done`` after
    the last part: (msgids, response_code, the request's (key, record) when split)."""
    keys = [names.status(prefix, request_id), mark[0]]
    args: list[str | bytes | int] = [attempts_field(part), mark[1], ttl, STATUS_TTL]
    if done is not None:
        msgids, code, whole = done
        args += [json.dumps(msgids), code]
        if whole is not None:
            keys.append(whole[0])
            args.append(whole[1])
    return keys, args


def delayed(
    pipe: Pipeline, prefix: str, request_id: str, until: float, reason: str, errcode: int = 0
) -> None:
    key = names.status(prefix, request_id)
    pipe.hset(key, mapping={"state": "delayed", "until": repr(until), "reason": reason})
    if errcode:
        pipe.hset(key, "errcode", errcode)
    pipe.expire(key, STATUS_TTL)


def sent(pipe: Pipeline, prefix: str, request_id: str, msgids: list[str], code: str) -> None:
    key = names.status(prefix, request_id)
    pipe.hset(
        key,
        mapping={"state": "sent", "msgids": json.dumps(msgids), "response_code": code},
    )
    pipe.hdel(key, "until", "reason", "errcode", "advice")
    pipe.expire(key, STATUS_TTL)


def dead(pipe: Pipeline, prefix: str, request_id: str, errcode: int | None, advice: str) -> None:
    key = names.status(prefix, request_id)
    pipe.hset(key, mapping={"state": "dead", "advice": advice})
    if errcode is not None:
        pipe.hset(key, "errcode", errcode)
    pipe.hdel(key, "until", "reason")
    pipe.expire(key, STATUS_TTL)


async def read(redis: Redis, prefix: str, request_id: str) -> MessageState | None:
    """The state of ``request_id``, or None when it was never accepted (or is long gone).

    A ``delayed`` whose time has passed is reported ``queued``: it is back on the outbox.
    """
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(names.status(prefix, request_id))
        pipe.get(names.sent(prefix, request_id))
        raw, mark = await pipe.execute()
    fields = {_text(k): _text(v) for k, v in raw.items()}
    state = fields.get("state")
    if state == "sent" or mark is not None:  # the mark is written first: it is the truth
        return _sent(request_id, fields, mark)
    if state == "dead":
        code = fields.get("errcode")
        return MessageState(
            id=request_id,
            status="dead",
            errcode=int(code) if code else None,
            advice=fields.get("advice", ""),
        )
    if state == "delayed" and float(fields.get("until", "0")) > time.time():
        code = fields.get("errcode")
        return MessageState(
            id=request_id,
            status="delayed",
            until=float(fields["until"]),
            reason=fields.get("reason"),
            errcode=int(code) if code else None,
        )
    return MessageState(id=request_id, status="queued") if state else None


def _sent(request_id: str, fields: dict[str, str], mark: bytes | None) -> MessageState:
    msgids: list[str] = json.loads(fields["msgids"]) if "msgids" in fields else []
    if not msgids and mark is not None:  # a request sent before states were kept
        msgids = [str(json.loads(mark).get("msgid", ""))]
    return MessageState(
        id=request_id,
        status="sent",
        msgid=msgids[0] if msgids else "",
        response_code=fields.get("response_code", ""),
        msgids=msgids if len(msgids) > 1 else None,
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
