"""What the operator commands share: one Redis client per run, one way to say no, and
``Finding``, one line of ``wecom-bus check``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Literal, NamedTuple, TypeVar

from redis.asyncio import Redis

__all__ = ["Finding", "Level", "fail", "with_redis"]

T = TypeVar("T")


def fail(command: str, message: str, code: int = 1) -> int:
    """Print ``wecom-bus <command>: <message>`` on stderr and return ``code``."""
    print(f"wecom-bus {command}: {message}", file=sys.stderr)
    return code


def with_redis(url: str, work: Callable[[Redis], Awaitable[T]]) -> T:
    """Run ``work`` with a Redis client on ``url`` in a fresh event loop; close it after."""

    async def main() -> T:
        redis = Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
        try:
            return await work(redis)
        finally:
            await redis.aclose()

    return asyncio.run(main())


Level = Literal["ok", "warning", "error"]


class Finding(NamedTuple):
    """One line of ``wecom-bus check``; any ``error`` makes the check exit non-zero."""

    item: str
    level: Level
    text: str

    def line(self) -> str:
        if self.level == "ok":
            return f"{self.item}: ok ({self.text})" if self.text else f"{self.item}: ok"
        return f"{self.item}: {self.level}: {self.text}"
