"""Lua scripts, run one way everywhere: EVALSHA, loaded again when Redis answers NOSCRIPT.

Redis forgets loaded scripts on restart, failover and ``SCRIPT FLUSH``; every script here is
sent by its SHA1 and, on NOSCRIPT, once more in full (``EVAL``, which also caches it). Keys are
always passed as ``KEYS`` (never built inside Lua), so Redis Cluster routes the call by them and
the keys one script touches must share a hash tag.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

__all__ = ["Script"]

Keys = Sequence[str | bytes]
Args = Sequence[str | bytes | int | float]


class Script:
    """One Lua script. ``await script(redis, keys, args)`` runs it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    def __repr__(self) -> str:
        return f"Script(sha={self.sha[:12]})"

    async def __call__(self, redis: Redis, keys: Keys, args: Args = ()) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await redis.eval(self.text, len(keys), *keys, *args)

    def queue(self, pipe: Pipeline, keys: Keys, args: Args = ()) -> None:
        """Add a call to a pipeline; :meth:`run_batch` handles NOSCRIPT for a whole batch."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    async def run_batch(self, redis: Redis, calls: Sequence[tuple[Keys, Args]]) -> list[Any]:
        """Run many calls in one round trip (no transaction); one result (or error) per call.

        Errors are returned in place, not raised, so one failing call does not hide the others'
        results. Calls that met NOSCRIPT are sent again in full. On Redis Cluster the calls go
        out concurrently instead (redis-py's cluster pipeline refuses EVALSHA).
        """
        if not calls:
            return []
        if isinstance(redis, RedisCluster):
            # A cluster pipeline refuses EVALSHA; concurrent calls still share the wait.
            return list(
                await asyncio.gather(*(self(redis, k, a) for k, a in calls), return_exceptions=True)
            )
        pipe = redis.pipeline(transaction=False)
        for keys, args in calls:
            self.queue(pipe, keys, args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        again = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if again:
            pipe = redis.pipeline(transaction=False)
            for i in again:
                keys, args = calls[i]
                pipe.eval(self.text, len(keys), *keys, *args)
            for i, result in zip(again, await pipe.execute(raise_on_error=False), strict=True):
                results[i] = result
        return results
