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
from redis.exceptions import NoScriptError, RedisError

__all__ = ["NotReplicated", "Script", "Wait", "check_replicated"]

Keys = Sequence[str | bytes]
Args = Sequence[str | bytes | int | float]
# BUS_MIN_REPLICAS and its timeout (ms): WAIT for that many replicas after the write.
Wait = tuple[int, int]


class NotReplicated(RedisError):
    """The write is on the primary but fewer replicas than asked confirmed it in time."""


def check_replicated(acked: Any, wait: Wait) -> None:
    """Raise NotReplicated unless WAIT's answer ``acked`` reaches ``wait``'s replica count."""
    if int(acked) < wait[0]:
        raise NotReplicated(f"{int(acked)} of {wait[0]} replicas confirmed within {wait[1]} ms")


class Script:
    """One Lua script. ``await script(redis, keys, args)`` runs it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    def __repr__(self) -> str:
        return f"Script(sha={self.sha[:12]})"

    async def __call__(
        self, redis: Redis, keys: Keys, args: Args = (), *, wait: Wait | None = None
    ) -> Any:
        """Run the script; with ``wait``, WAIT on the same connection right after it and raise
        NotReplicated (the write stands on the primary) when too few replicas confirm."""
        if wait is None:
            try:
                return await redis.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:
                return await redis.eval(self.text, len(keys), *keys, *args)
        result = (await self.run_batch(redis, [(keys, args)], wait=wait))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def queue(self, pipe: Pipeline, keys: Keys, args: Args = ()) -> None:
        """Add a call to a pipeline; :meth:`run_batch` handles NOSCRIPT for a whole batch."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    async def run_batch(
        self, redis: Redis, calls: Sequence[tuple[Keys, Args]], *, wait: Wait | None = None
    ) -> list[Any]:
        """Run many calls in one round trip (no transaction); one result (or error) per call.

        Errors are returned in place, not raised, so one failing call does not hide the others'
        results. Calls that met NOSCRIPT are sent again in full. On Redis Cluster the calls go
        out concurrently instead (redis-py's cluster pipeline refuses EVALSHA). ``wait``
        appends ``WAIT`` to the pipeline (same connection, so it covers these writes); when
        too few replicas confirm, every successful result becomes a NotReplicated error.
        """
        if not calls:
            return []
        if isinstance(redis, RedisCluster):
            # A cluster pipeline refuses EVALSHA; concurrent calls still share the wait.
            return list(
                await asyncio.gather(*(self(redis, k, a) for k, a in calls), return_exceptions=True)
            )
        results = await self._pipelined(redis, calls, range(len(calls)), wait, full=False)
        again = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if again:
            for i, result in zip(
                again, await self._pipelined(redis, calls, again, wait, full=True), strict=True
            ):
                results[i] = result
        return results

    async def _pipelined(
        self,
        redis: Redis,
        calls: Sequence[tuple[Keys, Args]],
        which: Sequence[int],
        wait: Wait | None,
        *,
        full: bool,
    ) -> list[Any]:
        pipe = redis.pipeline(transaction=False)
        for i in which:
            keys, args = calls[i]
            if full:
                pipe.eval(self.text, len(keys), *keys, *args)
            else:
                self.queue(pipe, keys, args)
        if wait is not None:
            pipe.execute_command("WAIT", *wait)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        if wait is None:
            return results
        acked = results.pop()
        try:
            if isinstance(acked, BaseException):
                raise acked
            check_replicated(acked, wait)
        except RedisError as exc:
            return [r if isinstance(r, BaseException) else exc for r in results]
        return results
