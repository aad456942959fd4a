"""Sending while a handler still runs: interim replies ("正在思考…") and early parts.

What a handler returns or ``ctx.publish``-es reaches the outbox only with the event's ack, which
is right for an answer but useless for "I am working on it" or for the first paragraph of a long
answer. ``send_now`` puts one request on the outbox at once, with an id derived from the event's
entry id, the handler and a label (``request_id(stream, entry, "<handler>#<label>", index)``):
a redelivered event makes the same ids. The request is enqueued with an idempotency mark by
``outbox.enqueue_once`` (mark and XADD in one script), so a second delivery adds nothing; the
sender's sent-mark dedups too.

``Interim`` sends one interim reply if the handler has not answered within ``after`` seconds;
``interim(ctx, …)`` makes one on the service's Redis and outbox (``ctx.state``)::

    async with interim(ctx, TextSend.reply_to(msg, "正在思考…"), after=5) as thinking:
        ...                 # the long call; thinking.cancel() once something real was sent
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time

from redis.asyncio import Redis

from shared import tracing
from shared.bus import names
from shared.bus.outbox import enqueue_once
from shared.bus.router import Context, request_id
from shared.schemas.envelope import outbox_entry
from shared.schemas.outbound import SendRequest

__all__ = ["Interim", "delivered", "early_id", "interim", "send_now"]

log = logging.getLogger("wecom_bus.interim")


def early_id(ctx: Context, label: str, index: int = 0) -> str:
    """The outbox id of the ``index``-th early request labelled ``label`` for ctx's event."""
    return request_id(ctx.stream, ctx.entry_id, f"{ctx.handler}#{label}", index)


async def send_now(
    redis: Redis,
    ctx: Context,
    request: SendRequest,
    *,
    label: str,
    index: int = 0,
    prefix: str = names.DEFAULT_PREFIX,
    maxlen: int = 100_000,
) -> bool:
    """Put ``request`` on the outbox now, once per (event, handler, label, index).

    Returns False when an earlier delivery of the event already enqueued it. It goes to the
    outbox of the event's partition (``BUS_PARTITIONS``), where the handler's replies go too.
    """
    rid = early_id(ctx, label, index)
    entry = outbox_entry(
        id=rid,
        app=ctx.app,
        trace_id=ctx.trace_id,
        created_at=time.time(),
        request=request,
        origin=f"handler:{ctx.handler}",
        traceparent=tracing.traceparent(),  # sent within the handler's trace
    )
    digest = hashlib.sha256(f"{ctx.app}\0{rid}".encode()).hexdigest()
    part = names.partition_of(ctx.stream, prefix)  # the mark shares the outbox's slot
    mark = names.idempotency(part, digest)
    enqueued = await enqueue_once(redis, entry, mark, prefix=prefix, part=part, maxlen=maxlen)
    return enqueued.now


async def delivered(
    redis: Redis,
    request_id: str,
    *,
    prefix: str = names.DEFAULT_PREFIX,
    patience: float = 30.0,
    poll: float = 0.1,
) -> bool:
    """Wait until the sender has delivered request ``request_id`` (its sent-mark exists).

    The sender works on many outbox entries at once, so two entries for one member may reach
    WeCom in either order; a handler that sends parts waits for each before enqueuing the next.
    Returns False after ``patience`` seconds (the caller goes on: late beats never).
    """
    key = names.sent(prefix, request_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while not await redis.exists(key):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(poll)
    return True


class Interim:
    """Sends ``request`` once if the block is still running ``after`` seconds in (None: never).

    Leaving the block, or ``cancel()``, stops the timer. ``sent`` tells whether it fired (in
    this delivery or, for a redelivered event, an earlier one).
    """

    def __init__(
        self,
        redis: Redis,
        ctx: Context,
        request: SendRequest,
        *,
        after: float | None,
        prefix: str = names.DEFAULT_PREFIX,
        maxlen: int = 100_000,
    ) -> None:
        self.redis, self.ctx, self.request = redis, ctx, request
        self.after, self.prefix, self.maxlen = after, prefix, maxlen
        self.sent = False
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _fire(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.after or 0.0)
        if self._stop.is_set():
            return  # answered (or cancelled) in time
        try:
            await send_now(
                self.redis,
                self.ctx,
                self.request,
                label="interim",
                prefix=self.prefix,
                maxlen=self.maxlen,
            )
            self.sent = True
        except Exception as exc:  # an interim reply is a courtesy: never fail the handler
            log.warning("interim reply not sent", extra={"error": type(exc).__name__})

    @property
    def id(self) -> str:
        """The interim reply's request id (whether or not it was sent)."""
        return early_id(self.ctx, "interim")

    async def settle(self) -> None:
        """Stop the timer and wait until a send under way has finished; ``sent`` is then final."""
        self.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def cancel(self) -> None:
        """Stop the timer (a send already under way completes; it is never cut mid-command)."""
        self._stop.set()

    async def __aenter__(self) -> Interim:
        if self.after is not None:
            self._task = asyncio.create_task(self._fire())
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.settle()


def interim(ctx: Context, request: SendRequest, *, after: float | None) -> Interim:
    """An :class:`Interim` on the service's Redis and outbox, from ``ctx.state``."""
    settings = ctx.state.settings
    return Interim(
        ctx.state.redis,
        ctx,
        request,
        after=after,
        prefix=settings.prefix,
        maxlen=settings.stream_maxlen,
    )
