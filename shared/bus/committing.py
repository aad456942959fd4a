"""Recording what became of a delivery: commit, retry or dead letter, each one atomic write.

Every write first checks the entry is still pending, so when two consumers end up handling the
same entry only the first to finish records anything. Writes are retried through short Redis
outages; if Redis stays away the entry simply stays pending and is delivered again.

The commits of one loop tick go to Redis together (``Commits``). While the reader lingers
(``ConsumerOptions.read_linger``) they wait for its next read and go in the same write: the
replies to both then arrive together, and the consumer wakes once for them rather than twice
(on this kind of machine a wake-up costs more CPU than handling an event).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import msgspec
from prometheus_client import Counter
from redis import exceptions as rex
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from shared import tracing
from shared.bus import metrics, names, streams
from shared.bus.delivery import Delivery, Output
from shared.bus.options import ConsumerOptions
from shared.bus.ordering import Turns, order_of
from shared.bus.outage import OUTAGE, RedisWatch
from shared.bus.scripts import TickScripts, Wait, run_scripts, settle_later
from shared.bus.streams import Entry, FieldValue

__all__ = ["Recorder"]

log = logging.getLogger("wecom_bus.bus")
FAILED = object()  # what _persist answers for a write it could not make
_encode_json = msgspec.json.Encoder().encode


class Recorder:
    """Writes the outcomes of one consumer's deliveries and counts them (``stats``, metrics)."""

    def __init__(
        self,
        redis: Redis,
        stream: str,
        group: str,
        consumer: str,
        options: ConsumerOptions,
        *,
        watch: RedisWatch,
        on_nogroup: Callable[[], None],
    ) -> None:
        self.redis, self.stream, self.group, self.consumer = redis, stream, group, consumer
        self.options, self.watch, self._on_nogroup = options, watch, on_nogroup
        self.retry_key = names.retry(stream, group)
        # The dead letter of the stream's partition: the move is one script with the stream.
        self.deadletter = names.deadletter(names.partition_of(stream, options.prefix))
        self.stats: collections.Counter[str] = collections.Counter()
        self.commits = Commits(redis, wait=options.wait)
        self._counters: dict[str, Counter] = {}
        self.turns = Turns(redis, stream, group)  # the members' done marks (shared.bus.ordering)

    async def commit(self, delivery: Delivery, outputs: Sequence[Output]) -> None:
        """XADD the outputs and XACK the entry, atomically (one script call per entry; the
        commits of one loop tick share a round trip). Nothing to write when the handler's own
        script ran the commit (it took the delivery's ``AckOffer``): only counted."""
        maxlen, order = self.options.maxlen, order_of(delivery.fields)
        if delivery.offer is not None and (acked := delivery.offer.answer) is not None:
            self.count("ok")
            if acked == 1 and order is not None:
                self.turns.committed(order)
            return
        keys, args = streams.commit_call(
            stream=self.stream,
            group=self.group,
            entry_id=delivery.entry_id,
            outputs=[(out.stream, out.fields, out.maxlen or maxlen, out.order) for out in outputs],
            retry_key=self.retry_key,
            maxlen=maxlen,
            order=order,
        )
        answer = await self._persist(lambda _: self.commits.call(keys, args))
        self.count("failed" if answer is FAILED else "ok")
        if answer == 1 and order is not None:  # this commit moved the member's done mark
            self.turns.committed(order)

    async def retry(self, delivery: Delivery, due_ms: int) -> bool:
        """Leave the entry pending and due at ``due_ms``; False if that could not be written."""
        put = partial(
            streams.schedule_retry,
            retry_key=self.retry_key,
            entry_id=delivery.entry_id,
            due_ms=due_ms,
        )
        done = await self._persist(put) is not FAILED
        self.count("retry" if done else "failed")
        return done

    async def dead_letter(self, delivery: Delivery, error: str, outcome: str) -> None:
        """Move the entry to the dead-letter stream with ``error``, and ack it, atomically."""
        data = delivery.fields.get(b"data")
        if data is None:  # not one of ours: keep every field, readable
            raw = {
                k.decode(errors="replace"): v.decode(errors="replace")
                for k, v in delivery.fields.items()
            }
            data = _encode_json(raw)
        fields: dict[str, FieldValue] = {
            "stream": self.stream,
            "group": self.group,
            "id": delivery.entry_id,
            "attempts": delivery.delivery_count,
            "error": error,
            "data": data,
            "time": f"{time.time():.3f}",
            "consumer": self.consumer,
        }
        moved = FAILED is not await self._persist(
            partial(
                streams.dead_letter,
                deadletter=self.deadletter,
                stream=self.stream,
                group=self.group,
                entry_id=delivery.entry_id,
                fields=fields,
                retry_key=self.retry_key,
                maxlen=self.options.maxlen,
            )
        )
        if moved:
            extra = {"stream": self.stream, "group": self.group, "entry_id": delivery.entry_id}
            log.warning("entry dead-lettered", extra={**extra, "reason": error.split(":")[0]})
        self.count(outcome if moved else "failed")

    def count(self, outcome: str) -> None:
        self.stats[outcome] += 1
        counter = self._counters.get(outcome)
        if counter is None:  # one label lookup per outcome, not per delivery
            counter = self._counters[outcome] = metrics.PROCESSED.labels(
                self.stream, self.group, outcome
            )
        counter.inc()

    async def _persist(self, op: Callable[[Redis], Awaitable[object]]) -> object:
        """Run one write, retrying through short outages: what it answered, or ``FAILED``: not
        done (the entry stays pending).

        Retrying is safe: the scripts do nothing once the entry is no longer pending.
        """
        for attempt in range(5):
            try:
                answer = await op(self.redis)
                self.watch.ok()
                return answer
            except OUTAGE as exc:
                self.watch.outage(exc)
                await asyncio.sleep(random.uniform(0, 0.1 * 2**attempt))
            except rex.ResponseError as exc:
                if not streams.is_nogroup(exc):
                    raise
                self._on_nogroup()
                return FAILED
        where = {"stream": self.stream, "group": self.group, "consumer": self.consumer}
        log.warning("could not record an outcome; the entry stays pending", extra=where)
        return FAILED


class Commits:
    """The commit calls of one consumer, one script call each, queued and sent together
    (a :class:`TickScripts` batch): at the next loop tick, or, while held (:meth:`hold`), with
    the reader's next read (:meth:`read`).

    Holding is for a single server without WAIT and without tracing (a cluster routes the read
    and the scripts apart, WAIT must close the commits' own pipeline, and tracing reads through
    redis-py); elsewhere ``hold`` does nothing.
    """

    def __init__(self, redis: Redis, *, wait: Wait | None) -> None:
        self.redis = redis
        self._can_hold = wait is None and not isinstance(redis, RedisCluster)
        self._tick = TickScripts(redis, wait=wait)

    def call(self, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """Queue one commit; the future resolves to the script's answer or raises its error."""
        return self._tick.call(streams.COMMIT, keys, args)

    @property
    def ride(self) -> TickScripts | None:
        """The queue a handler may add its own script calls to (``AckOffer.ride``)."""
        return self._tick if self._can_hold and not tracing.enabled() else None

    def hold(self) -> None:
        """Keep what is queued from now on for the reader's next read (it is about to read
        again, at once or after lingering)."""
        if self.ride is not None:
            self._tick.hold()

    def release(self) -> None:
        """Stop holding: what is queued goes now (the reader will not read soon after all)."""
        self._tick.release()

    async def read(
        self, stream: str, group: str, consumer: str, *, count: int, block_ms: int | None
    ) -> list[Entry]:
        """The reader's XREADGROUP (``streams.read_group``). What was held goes in the same
        write, before it: each commit's caller gets its answer as soon as it is read, while
        the read itself may block."""
        if not self._tick.held:
            self._tick.release()
            return await streams.read_group(
                self.redis, stream, group, consumer, count=count, block_ms=block_ms
            )
        calls, futures = self._tick.take()
        answered = [False] * len(calls)

        def settle(i: int, answer: Any) -> None:
            answered[i], future = True, futures[i]
            if future.done():  # its caller went away (cancelled), or a retry answered again
                return
            if isinstance(answer, rex.NoScriptError):  # Redis forgot the script: once more
                settle_later([future], run_scripts(self.redis, [calls[i]]))
            elif isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)

        try:
            _, entries = await streams.read_group_after(
                self.redis,
                calls,
                stream,
                group,
                consumer,
                count=count,
                block_ms=block_ms,
                answered=settle,
            )
        except asyncio.CancelledError:  # the unanswered may have run or not: safe to repeat
            left = [i for i, done in enumerate(answered) if not done]
            if left:
                settle_later(
                    [futures[i] for i in left], run_scripts(self.redis, [calls[i] for i in left])
                )
            raise
        except Exception as exc:  # the connection failed: their callers retry (Recorder)
            for done, future in zip(answered, futures, strict=True):
                if not done and not future.done():
                    future.set_exception(exc)
            raise
        return entries
