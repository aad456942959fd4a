"""``wecom-bus deadletter list|replay|drop``: read and act on dead letters from a terminal.

All the work is ``shared.bus.deadletter.DeadLetters``; this module turns options into its
filters and its records into lines (or JSON lines with ``--json``).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.commands.base import fail, with_redis
from shared.bus.deadletter import DeadLetter, DeadLetters
from shared.config import load_settings

__all__ = ["parse_since", "run"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_since(text: str, now: float | None = None) -> float:
    """``30m``, ``2h``, ``1d`` (that long ago) or an ISO time (local unless it says) → unix s."""
    if match := _DURATION.match(text.strip()):
        ago = float(match.group(1)) * _UNIT[match.group(2)]
        return (time.time() if now is None else now) - ago
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a duration (30m, 2h, 1d) or a time (2026-01-31T08:00)"
        ) from None


def _line(letter: DeadLetter) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(letter.time))
    return (
        f"{letter.id}  {stamp}  {letter.stream}/{letter.group}  {letter.entry_id}  "
        f"attempts={letter.attempts}  {letter.reason}"
    )


async def _list(letters: DeadLetters, args: argparse.Namespace, filters: dict[str, Any]) -> int:
    found = await letters.list(**filters, limit=args.limit)
    for letter in found:
        print(msgspec.json.encode(letter).decode() if args.json else _line(letter))
    print(f"{len(found)} shown of {await letters.count()} dead letter(s)", file=sys.stderr)
    return 0


async def _act(letters: DeadLetters, args: argparse.Namespace, filters: dict[str, Any]) -> int:
    ids = list(args.ids) or [letter.id for letter in await letters.list(**filters, limit=None)]
    if args.action == "drop":
        dropped = await letters.drop(ids)
        for dead_id in dropped:
            print(f"{dead_id} dropped")
        return _status(ids, dropped, [i for i in ids if i not in dropped])
    result = await letters.replay(ids)
    for item in result.items:
        if item.outcome == "pending":
            print(f"{item.id} replayed: {item.entry_id} pending again for group {item.group}")
        elif item.outcome == "readded":
            print(f"{item.id} replayed: re-added to {item.stream} as {item.entry_id} (trimmed)")
        elif item.outcome == "nogroup":
            print(f"{item.id} kept: group {item.group} no longer exists on {item.stream}")
    return _status(ids, [item.id for item in result.replayed], result.missing)


def _status(ids: list[str], done: list[str], missing: list[str]) -> int:
    """0 when every id was acted on; else say what was not and return 1."""
    if not ids:
        return fail("deadletter", "nothing matched")
    if missing:
        fail("deadletter", f"no such dead letter: {' '.join(missing)}")
    return 0 if len(done) == len(ids) else 1


def _usage_error(args: argparse.Namespace) -> str | None:
    if args.action == "list" and args.ids:
        return "list takes filters (--group, --reason…), not ids"
    if args.action != "list" and not args.ids and not args.all:
        return "name dead-letter ids, or --all (with filters to narrow it)"
    if args.ids and (args.all or args.group or args.stream or args.reason or args.since):
        return "give ids, or --all with filters, not both"
    return None


def run(args: argparse.Namespace) -> int:
    if problem := _usage_error(args):
        return fail("deadletter", problem, 2)
    settings = load_settings()
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        return fail("deadletter", str(exc), 2)
    filters = {"group": args.group, "stream": args.stream, "reason": args.reason, "since": since}

    async def work(redis: Redis) -> int:
        letters = DeadLetters(redis, settings.prefix, maxlen=settings.stream_maxlen)
        return await (_list if args.action == "list" else _act)(letters, args, filters)

    try:
        return with_redis(settings.require_redis(), work)
    except ValueError as exc:  # a malformed id
        return fail("deadletter", str(exc), 2)
    except (RedisError, OSError) as exc:
        return fail("deadletter", f"Redis unreachable ({type(exc).__name__})")
