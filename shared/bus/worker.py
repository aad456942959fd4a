"""The consumer runtime: run one handler over a consumer group of one stream, at least once.

The life of an entry::

    XREADGROUP ">"  ─┐
    XAUTOCLAIM idle ─┼─▶ handler(Delivery) ──returns outputs──▶ commit: XADD outputs + XACK, atomic
    due Retry       ─┘          │
                                ├─ Retry(defer) ─▶ stays pending; id in <stream>:retry:<group>
                                ├─ Reject(why)  ─▶ dead letter now
                                └─ exception    ─▶ stays pending; reclaimed after claim_idle

A delivery that fails (or retries) for the ``max_deliveries``-th time goes to the dead-letter
stream with its error; an entry reclaimed more often than that without any outcome (its consumer
kept dying) goes there too.

``Retry`` keeps the entry where it is: the id never changes, so idempotency keys derived from it
(the router's outbox ids) stay valid. The due time goes into a sorted set; the claimer takes due
ids out of it (ZRANGE+ZREM in one script, so one replica wins each) and XCLAIMs them. XAUTOCLAIM
knows nothing of that set, so an entry deferred for longer than ``claim_idle`` is claimed early:
the claimer then restores its delivery counter and leaves it alone until it is due.

Shape of arq's worker: ``stop()`` (SIGTERM) stops reading, in-flight work gets ``drain_timeout``
seconds, the rest is cancelled and left pending for another replica. Redis outages are waited
out with capped, jittered backoff, logged once per outage. A deleted group or flushed stream
(NOGROUP) is recreated, just before the oldest entry in flight here, else after the newest
entry seen, so nothing published meanwhile is skipped.

Commit and dead letter touch several keys in one script; on Redis Cluster they need one slot,
which a hash-tagged ``BUS_PREFIX`` such as ``{wecom}`` gives (see ``shared.bus.names``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import logging
import math
import os
import random
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import msgspec
from redis import exceptions as rex
from redis.asyncio import Redis

from shared.bus import names, streams
from shared.bus.delivery import (
    GROUP_LAG,
    GROUP_PENDING,
    HANDLER_SECONDS,
    LOST,
    PROCESSED,
    Delivery,
    Handler,
    Output,
    Reject,
    Retry,
    describe,
)
from shared.bus.streams import DEFAULT_MAXLEN, Entry, FieldValue, Start

__all__ = [
    "Consumer",
    "check_health",
    "install_signal_handlers",
    "observe_groups",
    "run_consumer",
]

log = logging.getLogger("wecom_bus.bus")

# Errors that mean "Redis is unreachable for now" (ReadOnlyError: a failover in progress).
_OUTAGE = (rex.ConnectionError, rex.TimeoutError, rex.ReadOnlyError, OSError)
_SETTLE_S = 1.0  # Redis must answer this long before an outage counts as over
_encode_json = msgspec.json.Encoder().encode


def _now_ms() -> int:
    return int(time.time() * 1000)


def _before(entry_id: str) -> str:
    """The id just before ``entry_id``: a group created there delivers ``entry_id`` next."""
    ms, _, seq = entry_id.partition("-")
    if int(seq or 0) > 0:
        return f"{ms}-{int(seq) - 1}"
    return f"{int(ms) - 1}-{2**64 - 1}" if int(ms) > 0 else "0"


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def observe_groups(redis: Redis, *stream_keys: str) -> None:
    """Read lag and pending of every group of ``stream_keys`` into the Prometheus gauges."""
    for stream in stream_keys:
        for group in await streams.groups(redis, stream):
            GROUP_PENDING.labels(stream, group.name).set(group.pending)
            if group.lag is not None:
                GROUP_LAG.labels(stream, group.name).set(group.lag)


async def check_health(
    redis: Redis, *, group: str, prefix: str = names.DEFAULT_PREFIX, host: str | None = None
) -> bool:
    """True while a consumer of ``group`` on ``host`` (default: this host) keeps its heartbeat."""
    return bool(await redis.exists(names.health(prefix, group, host or socket.gethostname())))


class Consumer:
    """One replica's consumer of ``group`` on ``stream``; see the module docstring.

    ``concurrency`` deliveries run at once and no more are read than can start at once (an
    entry waiting in memory would age towards ``claim_idle_ms`` and be claimed elsewhere).
    ``start``: where a group this consumer creates begins, "new" or "backlog". Consumers of
    the group idle ≥ ``dead_consumer_idle_ms`` with nothing pending are deleted. A handler
    running longer than ``handler_timeout`` (default 0.8 × claim_idle) fails. ``maxlen`` trims
    the outputs and the dead-letter stream (``MAXLEN ~``). ``name`` defaults to
    host-pid-random, unique per replica.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        stream: str,
        group: str,
        handler: Handler,
        name: str | None = None,
        concurrency: int = 16,
        batch: int = 32,
        block_ms: int = 1000,
        claim_idle_ms: int = 15_000,
        max_deliveries: int = 5,
        start: Start = "new",
        dead_consumer_idle_ms: int = 3_600_000,
        prefix: str = names.DEFAULT_PREFIX,
        drain_timeout: float = 10.0,
        handler_timeout: float | None = None,
        maxlen: int | None = DEFAULT_MAXLEN,
        heartbeat_interval: float = 5.0,
    ) -> None:
        if min(concurrency, batch, max_deliveries, claim_idle_ms, block_ms) < 1:
            raise ValueError("concurrency, batch, max_deliveries, claim_idle_ms, block_ms >= 1")
        self.redis, self.stream, self.group, self.handler = redis, stream, group, handler
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.concurrency, self.batch, self.block_ms = concurrency, batch, block_ms
        self.claim_idle_ms, self.max_deliveries, self.start = claim_idle_ms, max_deliveries, start
        self.dead_consumer_idle_ms, self.drain_timeout, self.maxlen = (
            dead_consumer_idle_ms,
            drain_timeout,
            maxlen,
        )
        # A handler still running after claim_idle would be run a second time by the replica
        # that reclaims it; stopping it a little earlier keeps one copy running at a time.
        self.handler_timeout = handler_timeout or claim_idle_ms * 0.8 / 1000
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat = 0.0  # unix time of the last successful Redis round trip
        self.stats: collections.Counter[str] = collections.Counter()
        self._retry_key = names.retry(stream, group)
        self._deadletter = names.deadletter(prefix)
        self._health_key = names.health(prefix, group, socket.gethostname())
        self._claim_poll = max(min(claim_idle_ms / 4000, 1.0), 0.01)
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._reserved = 0
        self._read_reserved = 0  # the part of _reserved a blocking read holds
        self._slot = asyncio.Event()
        self._stopping = asyncio.Event()
        self._force = False
        self._running = False
        self._cursor = "0-0"
        self._last_seen: str | None = None
        self._heal_needed = False
        self._outage_since: float | None = None
        self._calm_since: float | None = None
        self._next_sweep = 0.0
        self._dues: list[int] = []  # heap of due times (unix ms) of retries scheduled here

    @property
    def healthy(self) -> bool:
        """Running, not stopping, and Redis answered recently (what /readyz reports)."""
        stale_after = max(5.0, 3 * self.block_ms / 1000, 2 * self.heartbeat_interval)
        return (
            self._running
            and not self._stopping.is_set()
            and self._outage_since is None
            and time.time() - self.heartbeat < stale_after
        )

    def stop(self) -> None:
        """Stop taking work and drain; a second call cancels in-flight work at once."""
        if self._stopping.is_set():
            self._force = True
        self._stopping.set()
        self._slot.set()

    async def run(self) -> None:
        """Consume until ``stop()``, then drain in-flight work and return."""
        await self._serve(burst=False)

    async def run_burst(self) -> dict[str, int]:
        """Drain the group, then return the outcome counts.

        Returns once nothing is left to read and nothing is pending in the group (entries held
        by a dead consumer are claimed after ``claim_idle_ms``; retries are waited for).
        """
        await self._serve(burst=True)
        return dict(self.stats)

    # -- the loops ------------------------------------------------------------------------

    async def _serve(self, *, burst: bool) -> None:
        if self._running:
            raise RuntimeError(f"consumer {self.name} is already running")
        self._running, self._force = True, False
        self._stopping.clear()
        loops: list[asyncio.Task[None]] = []
        try:
            await self._loop(self._setup, once=True)
            if burst:
                await self._loop(self._burst_step)
            else:
                loops = [
                    asyncio.create_task(self._loop(self._read_step)),
                    asyncio.create_task(self._loop(self._claim_step)),
                    asyncio.create_task(self._loop(self._housekeeping_step)),
                ]
                await self._stopping.wait()
            await self._drain(loops)
            with contextlib.suppress(rex.RedisError, OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.redis.delete(self._health_key)
        finally:
            # Reached early only on cancellation or a bug: then nothing is drained.
            pending = [*loops, *self._inflight.values()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self._running = False

    async def _drain(self, loops: list[asyncio.Task[None]]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        reader, others = (loops[0], loops[1:]) if loops else (None, [])
        for task in others:
            task.cancel()
        if reader is not None:
            # The reader's current XREADGROUP ends within block_ms; what it returns is started.
            await asyncio.wait([reader], timeout=max(deadline - loop.time(), 0))
        while self._inflight and not self._force and loop.time() < deadline:
            await asyncio.wait(list(self._inflight.values()), timeout=0.05)
        if self._inflight:
            log.warning(
                "drain timeout: cancelling in-flight deliveries; they stay pending",
                extra={"stream": self.stream, "group": self.group, "count": len(self._inflight)},
            )

    async def _loop(self, step: Callable[[], Awaitable[float]], *, once: bool = False) -> None:
        """Run ``step`` until stopping, sleeping what it returns; outages are waited out."""
        failures = 0
        while not self._stopping.is_set():
            try:
                if self._heal_needed:
                    await self._heal()
                pause = await step()
            except _OUTAGE as exc:
                failures += 1
                self._outage(exc)
                pause = random.uniform(0, min(5.0, 0.05 * 2**failures))
            except rex.ResponseError as exc:
                if not streams.is_nogroup(exc):
                    failures += 1
                    log.error("consumer step failed", exc_info=exc, extra=self._where())
                    pause = min(5.0, 0.05 * 2**failures)
                else:
                    log.warning("consumer group is gone (NOGROUP)", extra=self._where())
                    self._heal_needed, pause = True, 0.0
            except Exception as exc:  # a bug: log it, back off, keep consuming
                failures += 1
                log.error("consumer step failed", exc_info=exc, extra=self._where())
                pause = min(5.0, 0.05 * 2**failures)
            else:
                failures = 0
                if once:
                    return
            if pause > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._stopping.wait()

    def _ok(self) -> None:
        """Redis just answered: beat; end an outage once Redis has answered for a while.

        Right after a restart the pool still holds dead connections whose first use fails;
        waiting for calm keeps that from being logged as a second outage.
        """
        self.heartbeat = time.time()
        if self._outage_since is None:
            return
        now = time.monotonic()
        if self._calm_since is None:
            self._calm_since = now
        elif now - self._calm_since >= _SETTLE_S:
            took = round(now - self._outage_since, 1)
            log.warning("redis reachable again", extra={"outage_s": took, **self._where()})
            self._outage_since = self._calm_since = None

    def _outage(self, exc: BaseException) -> None:
        self._calm_since = None
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            extra = {"error": describe(exc), **self._where()}
            log.warning("redis unreachable; retrying with backoff", extra=extra)

    async def _setup(self) -> float:
        await streams.ensure_group(self.redis, self.stream, self.group, start=self.start)
        self._ok()
        return 0.0

    async def _heal(self) -> None:
        if self._inflight:  # so that work in flight when the group vanished is delivered again
            first = _before(min(self._inflight, key=_id_key))
        else:
            first = self._last_seen or {"new": "$", "backlog": "0"}[self.start]
        created = await streams.ensure_group(self.redis, self.stream, self.group, start=first)
        self._heal_needed, self._cursor = False, "0-0"
        log.warning(
            "consumer group was missing (group deleted or stream flushed); %s at %s",
            "recreated it" if created else "another replica recreated it",
            first,
            extra={"stream": self.stream, "group": self.group},
        )

    def _free(self) -> int:
        return self.concurrency - len(self._inflight) - self._reserved

    def _claimable(self) -> int:
        """Slots for the claimer: a blocking read holds its slots while the stream is quiet,
        which is just when reclaiming matters (a dead replica's entries, due retries). So the
        claimer may use them too; if both return entries at once, concurrency briefly
        reaches at most twice its bound."""
        return self.concurrency - len(self._inflight) - (self._reserved - self._read_reserved)

    def _release(self, reserved: int) -> None:
        self._reserved -= reserved
        self._slot.set()

    def _poll_pause(self) -> float:
        """Until the next claim round: the poll interval, or sooner when a retry is due."""
        now = _now_ms()
        while self._dues and self._dues[0] <= now:
            heapq.heappop(self._dues)
        return min(self._claim_poll, (self._dues[0] - now) / 1000 if self._dues else math.inf)

    async def _read_step(self) -> float:
        if self._free() <= 0:
            self._slot.clear()
            await self._slot.wait()
        else:
            await self._read_once(block=True)
        return 0.0

    async def _read_once(self, *, block: bool) -> int:
        free = min(self.batch, self._free())
        if free <= 0:
            return 0
        self._reserved += free
        self._read_reserved += free
        try:
            entries = await streams.read_group(
                self.redis,
                self.stream,
                self.group,
                self.name,
                count=free,
                block_ms=self.block_ms if block else None,
            )
        finally:
            self._read_reserved -= free
            self._release(free)
        self._ok()
        for entry in entries:
            self._spawn(entry, 1)
        if entries:
            self._last_seen = entries[-1].id
        return len(entries)

    async def _claim_step(self) -> float:
        started = await self._claim_once()
        return 0.0 if started and self._free() > 0 else self._poll_pause()

    async def _claim_once(self) -> int:
        """Start due retries, then entries idle longer than claim_idle; returns how many."""
        free = self._claimable()
        if free <= 0:
            return 0
        self._reserved += free
        try:
            due = await streams.take_due(self.redis, self._retry_key, _now_ms(), free)
            # XCLAIM with min-idle 0: a due entry may have been idle for less than claim_idle.
            entries = await streams.claim(self.redis, self.stream, self.group, self.name, due)
            if len(entries) < free:
                claimed = await streams.claim_stale(
                    self.redis,
                    self.stream,
                    self.group,
                    self.name,
                    min_idle_ms=self.claim_idle_ms,
                    count=free - len(entries),
                    cursor=self._cursor,
                )
                self._cursor = claimed.cursor
                if claimed.deleted:
                    LOST.labels(self.stream, self.group).inc(len(claimed.deleted))
                    log.warning(
                        "pending entries were trimmed or deleted before being processed",
                        extra={"stream": self.stream, "group": self.group, "ids": claimed.deleted},
                    )
                entries += await self._not_deferred(claimed.entries)
            entries = [e for e in entries if e.id not in self._inflight]
            counts = await streams.delivery_counts(
                self.redis, self.stream, self.group, [e.id for e in entries]
            )
        finally:
            self._release(free)
        self._ok()
        started = 0
        for entry in entries:
            if entry.id in counts:  # else acknowledged by someone meanwhile
                self._spawn(entry, counts[entry.id])
                started += 1
        return started

    async def _not_deferred(self, entries: list[Entry]) -> list[Entry]:
        """Drop entries XAUTOCLAIM took before their Retry was due, undoing the count it added."""
        ids = [e.id for e in entries]
        now = _now_ms()
        deferred = await streams.deferred_until(self.redis, self._retry_key, ids)
        early = {i for i, due in deferred.items() if due > now}
        if early:
            counts = await streams.delivery_counts(self.redis, self.stream, self.group, [*early])
            for entry_id, count in counts.items():
                await streams.set_delivery_count(
                    self.redis, self.stream, self.group, self.name, entry_id, max(count - 1, 0)
                )
        return [e for e in entries if e.id not in early]

    async def _housekeeping_step(self) -> float:
        beat = {"consumer": self.name, "time": time.time(), "inflight": len(self._inflight)}
        ttl = max(int(self.heartbeat_interval * 3), 1)
        await self.redis.set(self._health_key, _encode_json(beat), ex=ttl)
        self._ok()
        await observe_groups(self.redis, self.stream)
        if time.monotonic() >= self._next_sweep:
            removed = await streams.remove_idle_consumers(
                self.redis,
                self.stream,
                self.group,
                idle_ms=self.dead_consumer_idle_ms,
                keep=self.name,
            )
            if removed:
                log.info(
                    "removed idle consumers with nothing pending",
                    extra={"stream": self.stream, "group": self.group, "consumers": removed},
                )
            self._next_sweep = time.monotonic() + min(self.dead_consumer_idle_ms / 2000, 60.0)
        return self.heartbeat_interval

    async def _burst_step(self) -> float:
        if await self._claim_once() + await self._read_once(block=False):
            return 0.0
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), return_when=asyncio.FIRST_COMPLETED)
            return 0.0
        if (await self.redis.xpending(self.stream, self.group))["pending"]:
            # Failed, deferred, or held by another consumer: wait until it is acked, or idle
            # long enough (or due) for this run to claim it.
            return self._poll_pause()
        self._stopping.set()
        return 0.0

    # -- one delivery ---------------------------------------------------------------------

    def _spawn(self, entry: Entry, count: int) -> None:
        if entry.id in self._inflight:
            return
        delivery = Delivery(entry.id, self.stream, entry.fields, count)
        task = asyncio.create_task(self._process(delivery), name=f"deliver {entry.id}")
        self._inflight[entry.id] = task
        task.add_done_callback(partial(self._done, entry.id))

    def _done(self, entry_id: str, task: asyncio.Task[None]) -> None:
        self._inflight.pop(entry_id, None)
        self._slot.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("delivery crashed the worker", exc_info=exc, extra={"entry_id": entry_id})

    async def _process(self, delivery: Delivery) -> None:
        if delivery.delivery_count > self.max_deliveries:
            tries = delivery.delivery_count - 1
            error = f"no outcome after {tries} deliveries (consumer died or was killed)"
            await self._dead_letter(delivery, error, "deadlettered")
            return
        last = delivery.delivery_count >= self.max_deliveries
        try:
            outputs = await self._call(delivery)
            committed = await self._persist(
                partial(
                    streams.commit,
                    stream=self.stream,
                    group=self.group,
                    entry_id=delivery.entry_id,
                    outputs=[
                        (out.stream, out.fields, out.maxlen or self.maxlen) for out in outputs
                    ],
                    retry_key=self._retry_key,
                    maxlen=self.maxlen,
                )
            )
            self._outcome("ok" if committed else "failed")
        except Retry as exc:
            if last:
                await self._dead_letter(delivery, describe(exc), "deadlettered")
            else:
                due = _now_ms() + int(exc.defer * 1000)
                put = partial(
                    streams.schedule_retry,
                    retry_key=self._retry_key,
                    entry_id=delivery.entry_id,
                    due_ms=due,
                )
                if await self._persist(put):
                    heapq.heappush(self._dues, due)  # this replica wakes for it; others poll
                    self._outcome("retry")
                else:
                    self._outcome("failed")
        except Reject as exc:
            await self._dead_letter(delivery, describe(exc), "rejected")
        except Exception as exc:  # the handler's, or its outputs could not be written
            if last:
                await self._dead_letter(delivery, describe(exc), "deadlettered")
            else:
                # The type only: a handler's message may quote the user's text.
                log.warning(
                    "delivery failed; the entry stays pending",
                    extra=self._log_fields(delivery, error=type(exc).__name__),
                )
                self._outcome("failed")

    async def _call(self, delivery: Delivery) -> Sequence[Output]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.handler_timeout) as deadline:
                return await self.handler(delivery)
        except TimeoutError:
            if deadline.expired():
                raise TimeoutError(f"handler ran longer than {self.handler_timeout:g}s") from None
            raise
        finally:
            HANDLER_SECONDS.labels(self.stream, self.group).observe(time.perf_counter() - started)

    async def _dead_letter(self, delivery: Delivery, error: str, outcome: str) -> None:
        data = delivery.fields.get(b"data")
        if data is None:  # not one of ours: keep every field, readable
            data = _encode_json(
                {
                    k.decode(errors="replace"): v.decode(errors="replace")
                    for k, v in delivery.fields.items()
                }
            )
        fields: dict[str, FieldValue] = {
            "stream": self.stream,
            "group": self.group,
            "id": delivery.entry_id,
            "attempts": delivery.delivery_count,
            "error": error,
            "data": data,
            "time": f"{time.time():.3f}",
            "consumer": self.name,
        }
        moved = await self._persist(
            partial(
                streams.dead_letter,
                deadletter=self._deadletter,
                stream=self.stream,
                group=self.group,
                entry_id=delivery.entry_id,
                fields=fields,
                retry_key=self._retry_key,
                maxlen=self.maxlen,
            )
        )
        if moved:
            log.warning(
                "entry dead-lettered", extra=self._log_fields(delivery, reason=error.split(":")[0])
            )
        self._outcome(outcome if moved else "failed")

    async def _persist(self, op: Callable[[Redis], Awaitable[object]]) -> bool:
        """Run one Redis write of an outcome, retrying through short outages; False: not done.

        Retrying is safe: the scripts do nothing once the entry is no longer pending. If Redis
        stays away, the entry simply stays pending and is delivered again.
        """
        for attempt in range(5):
            try:
                await op(self.redis)
                self._ok()
                return True
            except _OUTAGE as exc:
                self._outage(exc)
                await asyncio.sleep(random.uniform(0, 0.1 * 2**attempt))
            except rex.ResponseError as exc:
                if not streams.is_nogroup(exc):
                    raise
                self._heal_needed = True
                return False
        log.warning("could not record an outcome; the entry stays pending", extra=self._where())
        return False

    def _outcome(self, outcome: str) -> None:
        self.stats[outcome] += 1
        PROCESSED.labels(self.stream, self.group, outcome).inc()

    def _where(self) -> dict[str, object]:
        return {"stream": self.stream, "group": self.group, "consumer": self.name}

    def _log_fields(self, delivery: Delivery, **more: object) -> dict[str, object]:
        return {
            "stream": self.stream,
            "group": self.group,
            "entry_id": delivery.entry_id,
            "delivery": delivery.delivery_count,
            **more,
        }


def install_signal_handlers(
    consumer: Consumer, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    """SIGTERM/SIGINT stop ``consumer`` gracefully; a second signal cancels in-flight work."""
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, consumer.stop)


async def run_consumer(
    redis: Redis,
    *,
    stream: str,
    group: str,
    handler: Handler,
    burst: bool = False,
    handle_signals: bool = True,
    **options: Any,
) -> Consumer:
    """Build a ``Consumer`` (``options`` as its keyword arguments), run it, return it when done."""
    consumer = Consumer(redis, stream=stream, group=group, handler=handler, **options)
    if handle_signals:
        install_signal_handlers(consumer)
    if burst:
        await consumer.run_burst()
    else:
        await consumer.run()
    return consumer
