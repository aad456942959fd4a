"""The consumer runtime: run one handler over a consumer group of one stream, at least once.

The life of an entry::

    XREADGROUP ">"  ─┐               (its lease is extended while it runs)
    XAUTOCLAIM idle ─┼─▶ handler(Delivery) ─outputs─▶ commit: XADD outputs + XACK, atomic
    due Retry       ─┘          │
                                ├─ Retry(defer)        ─▶ stays pending; due in <stream>:retry:…
                                ├─ Reject, SchemaError ─▶ dead letter now, with the reason
                                └─ other exception     ─▶ stays pending; reclaimed after claim_idle

A delivery that fails (or retries) for the ``max_deliveries``-th time goes to the dead-letter
stream with its error; an entry reclaimed more often than that without any outcome (its consumer
kept dying) goes there too. ``Retry`` keeps the entry where it is: the id never changes, so
idempotency keys derived from it (the router's outbox ids) stay valid.

Parts: ``claiming``, ``leasing`` (a handler keeps its entry however long it runs, up to
``handler_timeout``), ``committing`` (commits sent together, with the next read while the reader
lingers), ``linger`` (when the reader waits before reading again), ``outage`` (outages waited
out, logged once), ``observe``, ``signals``.
Like arq's worker, ``stop()`` (SIGTERM) stops reading and gives in-flight work ``drain_timeout``
seconds; the rest stays pending for another replica. A deleted group or flushed stream (NOGROUP)
is recreated just before the oldest entry in flight here, else after the newest entry seen.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from redis.asyncio import Redis

from shared.bus import metrics, streams
from shared.bus.claiming import Claimer, now_ms
from shared.bus.committing import Recorder
from shared.bus.delivery import AckOffer, Delivery, Handler, Output, Reject, Retry, describe
from shared.bus.leasing import renew_leases
from shared.bus.linger import Linger
from shared.bus.observe import observe_groups, sweep_consumers
from shared.bus.options import ConsumerOptions
from shared.bus.ordering import order_of
from shared.bus.outage import OUTAGE, RedisWatch
from shared.bus.signals import install_signal_handlers
from shared.bus.streams import Entry
from shared.errors import SchemaError
from shared.tracing import span, traced_delivery

__all__ = ["Consumer", "ConsumerOptions", "install_signal_handlers", "observe_groups"]

log = logging.getLogger("wecom_bus.bus")

Step = Callable[[], Awaitable[float]]


class Consumer:
    """One replica's consumer of ``group`` on ``stream``; see the module docstring and
    ``ConsumerOptions`` for what can be tuned."""

    def __init__(
        self,
        redis: Redis,
        *,
        stream: str,
        group: str,
        handler: Handler,
        options: ConsumerOptions | None = None,
    ) -> None:
        self.redis, self.stream, self.group, self.handler = redis, stream, group, handler
        self.options = opts = options if options is not None else ConsumerOptions()
        self.name = opts.name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.watch = RedisWatch(self._where)
        self.claimer = Claimer(
            redis, stream=stream, group=group, consumer=self.name, claim_idle_ms=opts.claim_idle_ms
        )
        where = (stream, group, self.name)
        self.recorder = Recorder(redis, *where, opts, watch=self.watch, on_nogroup=self._group_gone)
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._handler_seconds = metrics.HANDLER_SECONDS.labels(stream, group)
        self._linger = Linger(opts.read_linger)
        self._reserved = 0
        self._read_reserved = 0  # the part of _reserved a blocking read holds
        self._slot = asyncio.Event()
        self._stopping = asyncio.Event()
        self._naps: set[asyncio.Future[None]] = set()  # loops sleeping until a time or stop()
        self._force = self._running = self._heal_needed = self._ended = False
        self._failing: set[str] = set()  # loops whose last step failed with a non-outage error
        self._last_seen: str | None = None
        self._next_sweep = 0.0

    @property
    def stats(self) -> dict[str, int]:
        return dict(self.recorder.stats)

    @property
    def in_flight(self) -> int:
        """Deliveries running now (handled, committing or acknowledging)."""
        return len(self._inflight)

    @property
    def healthy(self) -> bool:
        """Running, not stopping, every loop working and Redis answering (what /readyz says)."""
        o = self.options
        stale_after = max(5.0, 3 * o.block_ms / 1000, 2 * o.housekeeping_interval)
        return (
            self._running
            and not self._stopping.is_set()
            and not self._failing
            and self.watch.since is None
            and time.time() - self.watch.last_ok < stale_after
        )

    def stop(self) -> None:
        """Stop taking work and drain; a second call cancels in-flight work at once."""
        if self._stopping.is_set():
            self._force = True
        self._stopping.set()
        self._slot.set()
        for waker in self._naps:
            _wake(waker)

    async def run(self) -> None:
        """Consume until ``stop()``, then drain in-flight work and return."""
        await self._serve(burst=False)

    async def run_burst(self) -> dict[str, int]:
        """Drain the group, then return the outcome counts.

        Returns once nothing is left to read and nothing is pending in the group (entries held
        by a dead consumer are claimed after ``claim_idle``; retries are waited for).
        """
        await self._serve(burst=True)
        return self.stats

    # -- the loops ------------------------------------------------------------------------

    async def _serve(self, *, burst: bool) -> None:
        if self._running:
            raise RuntimeError(f"consumer {self.name} is already running")
        self._running, self._force, self._ended = True, False, False
        self._stopping.clear()
        loops: list[asyncio.Task[None]] = []
        try:
            await self._loop("setup", self._setup, once=True)
            steps = (
                {"burst": self._burst_step}
                if burst
                else {
                    "read": self._read_step,
                    "claim": self._claim_step,
                    "housekeeping": self._housekeeping_step,
                }
            )
            steps["lease"] = self._lease_step
            loops = [asyncio.create_task(self._loop(n, step)) for n, step in steps.items()]
            await self._stopping.wait()
            await self._drain(loops)
        finally:
            # Reached early only on cancellation or a bug: then nothing is drained.
            self._ended = True  # the lease loop ends even if its cancel is lost (see _loop)
            pending = [*loops, *self._inflight.values()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self._running = False

    async def _drain(self, loops: list[asyncio.Task[None]]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.drain_timeout
        reader, lease = loops[0], loops[-1]  # the lease loop runs until the drain ends
        for task in loops[1:-1]:
            task.cancel()
        # The reader's current XREADGROUP ends within block_ms; what it returns is started.
        await asyncio.wait([reader], timeout=max(deadline - loop.time(), 0))
        self.recorder.commits.release()  # held for a read that will not come
        while self._inflight and not self._force and loop.time() < deadline:
            await asyncio.wait(list(self._inflight.values()), timeout=0.05)
        lease.cancel()
        if self._inflight:
            log.warning(
                "drain timeout: cancelling in-flight deliveries; they stay pending",
                extra={**self._where(), "count": len(self._inflight)},
            )

    async def _loop(self, name: str, step: Step, *, once: bool = False) -> None:
        """Run ``step`` until stopping (the lease loop: until the run ends), sleeping what it
        returns. Outages are waited out; any other error is logged and backed off, and the
        consumer reports itself unhealthy until the step succeeds again. A cancel alone may not
        end a loop: on Python 3.11 redis-py's wait_for drops one landing as a write finishes."""
        failures, forever = 0, name == "lease"
        while not (self._ended if forever else self._stopping.is_set()):
            try:
                if self._heal_needed and not forever:
                    await self._heal()
                pause = await step()
            except OUTAGE as exc:
                failures += 1
                self.watch.outage(exc)
                pause = random.uniform(0, min(5.0, 0.05 * 2**failures))
            except Exception as exc:  # a Redis error or a bug: log it, back off, keep going
                failures += 1
                pause = self._step_failed(name, exc, failures)
            else:
                failures = 0
                self._failing.discard(name)
                if once:
                    return
            if forever:
                await asyncio.sleep(pause)
            elif pause > 0 and not self._stopping.is_set():
                await self._nap(pause)

    async def _nap(self, seconds: float) -> None:
        """Sleep ``seconds``, or until stop(): a timer and a future, a fifth of the CPU of a
        timeout around ``_stopping.wait()`` (the reader naps after every lingering read)."""
        waker = asyncio.get_running_loop().create_future()
        timer = waker.get_loop().call_later(seconds, _wake, waker)
        self._naps.add(waker)
        try:
            await waker
        finally:
            timer.cancel()
            self._naps.discard(waker)

    def _step_failed(self, name: str, exc: Exception, failures: int) -> float:
        if streams.is_nogroup(exc):
            log.warning("consumer group is gone (NOGROUP)", extra=self._where())
            self._group_gone()
            return 0.0
        self._failing.add(name)
        log.error("consumer step failed", exc_info=exc, extra={**self._where(), "step": name})
        return min(5.0, 0.05 * 2.0**failures)

    def _group_gone(self) -> None:
        self._heal_needed = True

    async def _setup(self) -> float:
        await streams.ensure_group(self.redis, self.stream, self.group, start=self.options.start)
        self.watch.ok()
        return 0.0

    async def _heal(self) -> None:
        self.recorder.commits.release()  # the read they were held for waits for the heal
        if self._inflight:  # so that work in flight when the group vanished is delivered again
            first = streams.id_before(min(self._inflight, key=streams.id_key))
        else:
            first = self._last_seen or {"new": "$", "backlog": "0"}[self.options.start]
        created = await streams.ensure_group(self.redis, self.stream, self.group, start=first)
        self._heal_needed, self.claimer.cursor = False, "0-0"
        log.warning(
            "consumer group was missing (group deleted or stream flushed); %s at %s",
            "recreated it" if created else "another replica recreated it",
            first,
            extra={"stream": self.stream, "group": self.group},
        )

    def _free(self) -> int:
        return self.options.concurrency - len(self._inflight) - self._reserved

    def _claimable(self) -> int:
        """Slots for the claimer, which may use those a blocking read holds (the stream is
        quiet): concurrency may briefly reach twice its bound if both return entries."""
        held = self._reserved - self._read_reserved
        return self.options.concurrency - len(self._inflight) - held

    def _release(self, reserved: int) -> None:
        self._reserved -= reserved
        self._slot.set()

    async def _read_step(self) -> float:
        if self._free() <= 0:
            self.recorder.commits.release()  # no read soon: held commits must not wait for one
            self._slot.clear()
            await self._slot.wait()
            return 0.0
        wanted = min(self.options.batch, self._free())
        if not (entries := await self._read_once(block=True)):
            return 0.0
        # Their commits go in the next read's write (one wake-up of Redis for both): after a
        # linger (shared.bus.linger), or once the deliveries just started reached them.
        self.recorder.commits.hold()
        if not (pause := self._linger.after(entries, wanted)):
            await asyncio.sleep(0)
        return pause

    async def _read_once(self, *, block: bool) -> list[Entry]:
        free = min(self.options.batch, self._free())
        if free <= 0:
            return []
        self._reserved += free
        self._read_reserved += free
        try:
            entries = await self.recorder.commits.read(
                self.stream,
                self.group,
                self.name,
                count=free,
                block_ms=self.options.block_ms if block else None,
            )
        finally:
            self._read_reserved -= free
            self._release(free)
        self.watch.ok()
        for entry in entries:
            self._spawn(entry, 1)
        if entries:
            self._last_seen = entries[-1].id
        return entries

    async def _claim_step(self) -> float:
        started = await self._claim_once()
        return 0.0 if started and self._free() > 0 else self.claimer.pause()

    async def _claim_once(self) -> int:
        """Start due retries, then entries idle longer than claim_idle; returns how many."""
        free = self._claimable()
        if free <= 0:
            return 0
        self._reserved += free
        try:
            claimed = await self.claimer.claim(free, self._inflight)
        finally:
            self._release(free)
        self.watch.ok()
        for entry, count in claimed:
            self._spawn(entry, count)
        return len(claimed)

    async def _lease_step(self) -> float:
        """Extend the lease of every entry running here; stop those another consumer took."""
        await renew_leases(self.redis, self.stream, self.group, self.name, self._inflight)
        self.watch.ok()
        return self.options.lease_interval

    async def _housekeeping_step(self) -> float:
        await observe_groups(self.redis, self.stream)
        self.watch.ok()
        if time.monotonic() >= self._next_sweep:
            idle = self.options.dead_consumer_idle
            await sweep_consumers(self.redis, self.stream, self.group, idle=idle, keep=self.name)
            self._next_sweep = time.monotonic() + min(idle / 2, 60.0)
        return self.options.housekeeping_interval

    async def _burst_step(self) -> float:
        if await self._claim_once() + len(await self._read_once(block=False)):
            return 0.0
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()), return_when=asyncio.FIRST_COMPLETED)
            return 0.0
        if (await self.redis.xpending(self.stream, self.group))["pending"]:
            # Failed, deferred, or held by another consumer: wait until it is acked, or idle
            # long enough (or due) for this run to claim it.
            return self.claimer.pause()
        self._stopping.set()
        return 0.0

    # -- one delivery ---------------------------------------------------------------------

    def _spawn(self, entry: Entry, count: int) -> None:
        if entry.id in self._inflight:
            return
        offer = AckOffer(self.group, self.recorder.retry_key, ride=self.recorder.commits.ride)
        delivery = Delivery(entry.id, self.stream, entry.fields, count, offer)
        work = traced_delivery(self._process(delivery), delivery, self.group)
        task = asyncio.create_task(work, name=f"deliver {entry.id}")
        self._inflight[entry.id] = task
        task.add_done_callback(partial(self._done, entry.id))

    def _done(self, entry_id: str, task: asyncio.Task[None]) -> None:
        self._inflight.pop(entry_id, None)
        self._slot.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("delivery crashed the worker", exc_info=exc, extra={"entry_id": entry_id})

    async def _process(self, delivery: Delivery) -> None:
        record, count = self.recorder, delivery.delivery_count
        if count > self.options.max_deliveries:
            error = f"no outcome after {count - 1} deliveries (consumer died or was killed)"
            await record.dead_letter(delivery, error, "deadlettered")
            return
        last = count >= self.options.max_deliveries
        order = order_of(delivery.fields)
        if order is not None:  # a member's entries in the order written (shared.bus.ordering)
            await record.turns.wait(delivery.entry_id, order, self.options.order_wait)
        try:
            outputs = await self._call(delivery)
            with span("bus.commit", {"wecom_bus.outputs": len(outputs)}):
                await record.commit(delivery, outputs)  # or counts the handler's (AckOffer)
        except Retry as exc:
            if last:
                await record.dead_letter(delivery, describe(exc), "deadlettered")
            else:
                due = now_ms() + int(exc.defer * 1000)
                if await record.retry(delivery, due):
                    self.claimer.due_at(due)  # this replica wakes for it; others poll
        except (Reject, SchemaError) as exc:  # can never succeed: no point trying again
            await record.dead_letter(delivery, describe(exc), "rejected")
        except Exception as exc:  # the handler's, or its outputs could not be written
            if last:
                await record.dead_letter(delivery, describe(exc), "deadlettered")
            else:
                # The type only: a handler's message may quote the user's text.
                log.warning(
                    "delivery failed; the entry stays pending",
                    extra={
                        **self._where(),
                        "entry_id": delivery.entry_id,
                        "delivery": count,
                        "error": type(exc).__name__,
                    },
                )
                record.count("failed")

    async def _call(self, delivery: Delivery) -> Sequence[Output]:
        started, limit = time.perf_counter(), self.options.handler_timeout
        try:
            with span("bus.handler"):
                async with asyncio.timeout(limit) as deadline:
                    return await self.handler(delivery)
        except TimeoutError:
            if deadline.expired():
                raise TimeoutError(f"handler ran longer than {limit:g}s") from None
            raise
        finally:
            self._handler_seconds.observe(time.perf_counter() - started)

    def _where(self) -> dict[str, object]:
        return {"stream": self.stream, "group": self.group, "consumer": self.name}


def _wake(waker: asyncio.Future[None]) -> None:
    if not waker.done():
        waker.set_result(None)
