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

from shared.bus.pinned import collector, run_pinned
from shared.bus.replicas import NotReplicated, Wait, check_replicated, replicated
from shared.bus.wire import send_batch

__all__ = [
    "NotReplicated",
    "Script",
    "ScriptBatch",
    "TickPipeline",
    "TickScripts",
    "Wait",
    "check_replicated",
    "run_scripts",
    "settle_later",
]

Keys = Sequence[str | bytes]
Args = Sequence[str | bytes | int | float]
ScriptCall = tuple["Script", Keys, Args]


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

    def batch(self, redis: Redis, *, wait: Wait | None = None) -> ScriptBatch:
        """A batcher of this script's calls: see :class:`ScriptBatch`."""
        return ScriptBatch(self, redis, wait=wait)

    async def run_batch(
        self, redis: Redis, calls: Sequence[tuple[Keys, Args]], *, wait: Wait | None = None
    ) -> list[Any]:
        """Run many calls in one round trip: :func:`run_scripts` with this script in each."""
        return await run_scripts(redis, [(self, keys, args) for keys, args in calls], wait=wait)


async def run_scripts(
    redis: Redis, calls: Sequence[ScriptCall], *, wait: Wait | None = None
) -> list[Any]:
    """Run many script calls (of one script or several) in one round trip (no transaction);
    one result (or error) per call.

    Errors are returned in place, not raised, so one failing call does not hide the others'
    results. Calls that met NOSCRIPT are sent again in full. On Redis Cluster each node's
    calls go out on one connection of that node (``shared.bus.pinned``: redis-py's cluster
    pipeline refuses EVALSHA). ``wait`` appends ``WAIT`` to the pipeline (same connection,
    so it covers these writes; on a cluster one per node); when too few replicas confirm,
    every successful result becomes a NotReplicated error.
    """
    if not calls:
        return []
    commands = [("EVALSHA", s.sha, len(keys), *keys, *args) for s, keys, args in calls]
    results = await _pipelined(redis, commands, wait)
    again = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if again:
        full = [calls[i] for i in again]
        commands = [("EVAL", s.text, len(keys), *keys, *args) for s, keys, args in full]
        for i, result in zip(again, await _pipelined(redis, commands, wait), strict=True):
            results[i] = result
    return results


async def _pipelined(
    redis: Redis, commands: Sequence[Sequence[Any]], wait: Wait | None
) -> list[Any]:
    if isinstance(redis, RedisCluster):  # its pipelines refuse EVALSHA: one per node
        return await run_pinned(redis, [(tuple(c), {}) for c in commands], wait)
    if wait is None:
        return await send_batch(redis, commands)
    results = await send_batch(redis, [*commands, ("WAIT", *wait)])
    return replicated(results, wait)


class ScriptBatch:
    """Calls of one script made within one event-loop tick, sent as one pipeline.

    Under load many tasks call the same script at about the same moment (the ingress storing
    callbacks, a consumer committing the entries of one read). Each ``call`` is queued, and
    everything queued in the tick goes out together through :func:`run_scripts`: one
    round trip and one write for the lot, while each call still runs as its own script (atomic
    alone, failing alone, its result or error handed to its own caller). With ``wait`` one
    ``WAIT`` closes the batch's pipeline and covers every call in it (see ``run_scripts``).
    """

    def __init__(self, script: Script, redis: Redis, *, wait: Wait | None = None) -> None:
        self.script, self.redis, self.wait = script, redis, wait
        self._tick = TickScripts(redis, wait=wait)

    def call(self, keys: Keys, args: Args = ()) -> asyncio.Future[Any]:
        """Queue one call; the future resolves to its result or raises what Redis raised for it
        (connection errors included)."""
        return self._tick.call(self.script, keys, args)


class TickScripts:
    """:class:`ScriptBatch` for calls of several scripts: the sender's gates and records of
    one tick share a round trip (``services.sender.gates``).

    While held (:meth:`hold`), calls wait instead of going at the tick's end, until
    :meth:`release`, or until :meth:`take` hands them to a caller that sends them itself (a
    consumer's commits riding its next read, ``shared.bus.committing``)."""

    def __init__(self, redis: Redis, *, wait: Wait | None = None) -> None:
        self.redis, self.wait = redis, wait
        self._calls: list[ScriptCall] = []
        self._futures: list[asyncio.Future[Any]] = []
        self._holding = False

    def call(self, script: Script, keys: Keys, args: Args = ()) -> asyncio.Future[Any]:
        """Queue one call of ``script``: see :meth:`ScriptBatch.call`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._calls:
            loop.call_soon(self._flush)
        self._calls.append((script, keys, args))
        self._futures.append(future)
        return future

    @property
    def held(self) -> bool:
        """Calls are queued and held."""
        return self._holding and bool(self._calls)

    @property
    def holding(self) -> bool:
        """Calls queued now are held (see the class)."""
        return self._holding

    def hold(self) -> None:
        """Keep what is queued from now on (see the class)."""
        self._holding = True

    def release(self) -> None:
        """Stop holding: what is queued goes now."""
        self._holding = False
        self._flush()

    def take(self) -> tuple[list[ScriptCall], list[asyncio.Future[Any]]]:
        """What is queued, with its callers' futures, for the caller to send and settle;
        holding ends."""
        calls, futures = self._calls, self._futures
        self._calls, self._futures, self._holding = [], [], False
        return calls, futures

    def _flush(self) -> None:
        if self._holding or not self._calls:
            return
        calls, futures = self.take()
        settle_later(futures, run_scripts(self.redis, calls, wait=self.wait))


class TickPipeline:
    """Commands many tasks queue within one event-loop tick, sent to Redis as one pipeline.

    ``await ticks.run(fill)``: ``fill(pipe)`` adds this caller's commands; the answer is their
    results, errors in place (``raise_on_error=False``). With ``transaction=True`` the whole
    tick's commands run in one MULTI/EXEC: each caller's writes are still all or nothing. On
    Redis Cluster a tick's commands go out on one connection per node (``shared.bus.pinned``),
    and with ``transaction`` every caller gets its own pipeline (a MULTI spans one slot). ``wait``
    (not with ``transaction``: WAIT inside MULTI does not block) closes the pipeline with one
    WAIT (on a cluster one per node: ``shared.bus.pinned``); too few replicas turn every
    successful result into a NotReplicated error.
    """

    def __init__(
        self, redis: Redis, *, transaction: bool = False, wait: Wait | None = None
    ) -> None:
        if transaction and wait is not None:
            raise ValueError("WAIT does not block inside MULTI: no wait with transaction")
        self.redis, self.transaction, self.wait = redis, transaction, wait
        self._pipe: Pipeline | None = None
        self._spans: list[tuple[int, int]] = []
        self._futures: list[asyncio.Future[Any]] = []

    async def run(self, fill: Callable[[Pipeline], object]) -> list[Any]:
        cluster = isinstance(self.redis, RedisCluster)
        if cluster and self.transaction:
            async with self.redis.pipeline(transaction=True) as pipe:
                fill(pipe)
                return await _execute(pipe, self.wait)
        loop = asyncio.get_running_loop()
        if self._pipe is None:
            self._pipe = (
                collector() if cluster else self.redis.pipeline(transaction=self.transaction)
            )
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
            if isinstance(self.redis, RedisCluster):
                results = await run_pinned(self.redis, pipe.command_stack, self.wait)
            else:
                results = await _execute(pipe, self.wait)
            return [results[a:b] for a, b in spans]

        settle_later(futures, execute())


async def _execute(pipe: Any, wait: Wait | None) -> list[Any]:
    """Execute ``pipe`` (errors in place); with ``wait``, closed by one WAIT on its connection,
    which covers every write before it: too few replicas make each success NotReplicated."""
    if wait is not None:
        pipe.execute_command("WAIT", *wait)
    results: list[Any] = list(await pipe.execute(raise_on_error=False))
    return results if wait is None else replicated(results, wait)


def settle_later(futures: list[asyncio.Future[Any]], results: Awaitable[list[Any]]) -> None:
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
