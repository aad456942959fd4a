"""Lua scripts, run one way everywhere: EVALSHA, loaded again when Redis answers NOSCRIPT.

Redis forgets loaded scripts on restart, failover and ``SCRIPT FLUSH``; every script here is
sent by its SHA1 and, on NOSCRIPT, once more in full (``EVAL``, which also caches it). Keys are
always passed as ``KEYS`` (never built inside Lua), so Redis Cluster routes the call by them and
the keys one script touches must share a hash tag.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

__all__ = ["Script", "ScriptBatch", "TickPipeline"]

Keys = Sequence[str | bytes]
Args = Sequence[str | bytes | int | float]
Call = tuple[Keys, Args]


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

    def batch(self, redis: Redis) -> ScriptBatch:
        """A batcher of this script's calls: see :class:`ScriptBatch`."""
        return ScriptBatch(self, redis)

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


class ScriptBatch:
    """Calls of one script made within one event-loop tick, sent as one pipeline.

    Under load many tasks call the same script at about the same moment (the ingress storing
    callbacks, a consumer committing the entries of one read). Each ``call`` is queued, and
    everything queued in the tick goes out together through :meth:`Script.run_batch`: one
    round trip and one write for the lot, while each call still runs as its own script (atomic
    alone, failing alone, its result or error handed to its own caller).
    """

    def __init__(self, script: Script, redis: Redis) -> None:
        self.script, self.redis = script, redis
        self._calls: list[Call] = []
        self._futures: list[asyncio.Future[Any]] = []

    def call(self, keys: Keys, args: Args = ()) -> asyncio.Future[Any]:
        """Queue one call; the future resolves to its result or raises what Redis raised for it
        (connection errors included)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._calls:
            loop.call_soon(self._flush)
        self._calls.append((keys, args))
        self._futures.append(future)
        return future

    def _flush(self) -> None:
        calls, futures = self._calls, self._futures
        self._calls, self._futures = [], []
        _settle_later(futures, self.script.run_batch(self.redis, calls))


class TickPipeline:
    """Commands many tasks queue within one event-loop tick, sent to Redis as one pipeline.

    ``await ticks.run(fill)``: ``fill(pipe)`` adds this caller's commands; the answer is their
    results, errors in place (``raise_on_error=False``). With ``transaction=True`` the whole
    tick's commands run in one MULTI/EXEC: each caller's writes are still all or nothing. On
    Redis Cluster every caller gets its own pipeline, as if there were no batching.
    """

    def __init__(self, redis: Redis, *, transaction: bool = False) -> None:
        self.redis, self.transaction = redis, transaction
        self._pipe: Pipeline | None = None
        self._spans: list[tuple[int, int]] = []
        self._futures: list[asyncio.Future[Any]] = []

    async def run(self, fill: Callable[[Pipeline], object]) -> list[Any]:
        if isinstance(self.redis, RedisCluster):
            async with self.redis.pipeline(transaction=self.transaction) as pipe:
                fill(pipe)
                return list(await pipe.execute(raise_on_error=False))
        loop = asyncio.get_running_loop()
        if self._pipe is None:
            self._pipe = self.redis.pipeline(transaction=self.transaction)
            loop.call_soon(self._flush)
        start = len(self._pipe.command_stack)
        fill(self._pipe)
        future: asyncio.Future[Any] = loop.create_future()
        self._spans.append((start, len(self._pipe.command_stack)))
        self._futures.append(future)
        results: list[Any] = await future
        return results

    def _flush(self) -> None:
        pipe, spans, futures = self._pipe, self._spans, self._futures
        self._pipe, self._spans, self._futures = None, [], []
        assert pipe is not None

        async def execute() -> list[Any]:
            results = await pipe.execute(raise_on_error=False)
            return [results[a:b] for a, b in spans]

        _settle_later(futures, execute())


def _settle_later(futures: list[asyncio.Future[Any]], results: Awaitable[list[Any]]) -> None:
    """Hand each caller its result (an error is raised to it) once ``results`` are in."""
    task = asyncio.ensure_future(_settle(futures, results))
    task.add_done_callback(_retrieve)


async def _settle(futures: list[asyncio.Future[Any]], pending: Awaitable[list[Any]]) -> None:
    try:
        results = await pending
    except asyncio.CancelledError:
        for future in futures:
            future.cancel()
        raise
    except Exception as exc:  # a dropped connection fails the whole batch
        results = [exc] * len(futures)
    for future, result in zip(futures, results, strict=True):
        if future.done():  # its caller went away (cancelled, timed out)
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # failures were handed to the callers' futures
