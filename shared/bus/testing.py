"""Test helpers for teams: run a router over events on a real Redis, read what it would send.

A test needs no knowledge of streams or consumer groups::

    from shared.bus.testing import run_events, text_message, texts

    async def test_repair(redis: Redis) -> None:   # any redis.asyncio client on a test database
        entries = await run_events(redis, router, [text_message("报修 printer")])
        assert texts(entries) == ["工单已创建"]
        assert entries[0].request.touser == "alice"

``run_events`` does what production does, with nothing stood in for: each event is added to
``<prefix>:events`` in an ``EventEnvelope`` as the ingress writes it, a ``Consumer`` runs
``router.handler(prefix)`` in burst mode on a throwaway consumer group, and the outbox entries
it committed are returned. Ids, the atomic commit and dead-lettering are therefore the real ones.
Use a Redis database the test owns (the default prefix is ``test``), through a client made with
redis-py's default ``decode_responses=False``.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import msgspec
from redis.asyncio import Redis

from shared.bus import names, streams
from shared.bus.options import ConsumerOptions
from shared.bus.router import Router, State
from shared.bus.worker import Consumer
from shared.config import load_settings
from shared.schemas.actions import ActionEntry, decode_action
from shared.schemas.envelope import EventEnvelope, OutboxEntry, decode_outbox, encode_envelope
from shared.schemas.inbound import (
    ClickEvent,
    InboundEvent,
    InboundEventType,
    TextMessage,
    dedup_key,
)
from shared.schemas.outbound import MarkdownSend, TextSend
from shared.wecom.gateway import gateway_for

__all__ = [
    "DEFAULT_PREFIX",
    "DeadLettered",
    "click_event",
    "publish_events",
    "read_actions",
    "read_outbox",
    "run_events",
    "text_message",
    "texts",
]

DEFAULT_PREFIX = "test"
CORP_ID = "wwtestcorp"  # ToUserName of the built events
AGENT_ID = 1000002

# Unique MsgIds within a process, and unlikely to repeat across runs on one Redis.
_msg_ids = itertools.count(time.time_ns() // 1000)


def text_message(
    content: str,
    from_user: str = "alice",
    *,
    to_user: str = CORP_ID,
    agent_id: int | None = AGENT_ID,
    msg_id: int | None = None,
    create_time: int | None = None,
) -> TextMessage:
    """A text message from ``from_user`` as WeCom delivers it (a fresh MsgId by default)."""
    return TextMessage(
        to_user=to_user,
        from_user=from_user,
        create_time=create_time if create_time is not None else int(time.time()),
        agent_id=agent_id,
        msg_id=msg_id if msg_id is not None else next(_msg_ids),
        content=content,
    )


def click_event(
    key: str,
    from_user: str = "alice",
    *,
    to_user: str = CORP_ID,
    agent_id: int | None = AGENT_ID,
    create_time: int | None = None,
) -> ClickEvent:
    """A menu click (Event ``click``) on the item whose key is ``key``."""
    return ClickEvent(
        to_user=to_user,
        from_user=from_user,
        create_time=create_time if create_time is not None else int(time.time()),
        agent_id=agent_id,
        event="click",
        event_key=key,
    )


async def publish_events(
    redis: Redis,
    events: Iterable[InboundEvent],
    *,
    app: str = "default",
    prefix: str = DEFAULT_PREFIX,
) -> list[str]:
    """Add ``events`` to ``<prefix>:events`` as the ingress would for ``app``; returns entry ids."""
    ids = []
    for event in events:
        envelope = EventEnvelope(
            app=app,
            received_at=time.time(),
            trace_id=secrets.token_hex(8),
            dedup_key=dedup_key(event),
            event=cast(InboundEventType, event),
        )
        data = encode_envelope(envelope)
        ids.append(await streams.publish(redis, names.events(prefix), {"data": data}))
    return ids


async def read_outbox(
    redis: Redis, *, prefix: str = DEFAULT_PREFIX, after: str | None = None
) -> list[OutboxEntry]:
    """The entries of ``<prefix>:outbox``, oldest first; only those after entry id ``after``."""
    rows: Any = await redis.xrange(names.outbox(prefix), min=f"({after}" if after else "-")
    return [decode_outbox(fields[b"data"]) for _, fields in rows if b"data" in fields]


async def read_actions(
    redis: Redis, *, prefix: str = DEFAULT_PREFIX, after: str | None = None
) -> list[ActionEntry]:
    """The outbox actions (recall, card update, bot response) on ``<prefix>:outbox``."""
    rows: Any = await redis.xrange(names.outbox(prefix), min=f"({after}" if after else "-")
    return [decode_action(fields[b"action"]) for _, fields in rows if b"action" in fields]


def texts(entries: Iterable[OutboxEntry]) -> list[str]:
    """The content of each text or markdown request, in order (ValueError for other kinds)."""
    out = []
    for entry in entries:
        request = entry.request
        if isinstance(request, TextSend):
            out.append(request.text.content)
        elif isinstance(request, MarkdownSend):
            out.append(request.markdown.content)
        else:
            raise ValueError(f"{entry.id} is a {type(request).__name__}, not text or markdown")
    return out


class DeadLettered(AssertionError):
    """``run_events`` moved events to the dead-letter stream (a handler raised, or Reject).

    ``errors`` holds each dead letter's error line; ``outbox`` what the other events produced.
    """

    def __init__(self, errors: list[str], outbox: list[OutboxEntry]) -> None:
        self.errors = errors
        self.outbox = outbox
        super().__init__(f"{len(errors)} event(s) dead-lettered: " + "; ".join(errors))


async def run_events(
    redis: Redis,
    router: Router,
    events: Sequence[InboundEvent],
    *,
    app: str = "default",
    prefix: str = DEFAULT_PREFIX,
    max_deliveries: int = 1,
    environ: Mapping[str, str] | None = None,
) -> list[OutboxEntry]:
    """Publish ``events`` for ``app``, run ``router`` over them once, return its outbox entries.

    The router's startup hooks run first and its shutdown hooks last, on a ``State`` whose
    settings are read from ``environ`` (default: none set, so every default) with ``prefix``.

    Events are handled one at a time, in order, so the entries come back in event order. Only
    these events are handled (the group starts after what the stream already holds), and only
    the outbox entries this run committed are returned. With the default ``max_deliveries=1``
    a handler that raises dead-letters its event at once; raise it to exercise ``Retry``
    (the run then waits for each retry to fall due). Any dead letter raises ``DeadLettered``.
    """
    stream, outbox = names.events(prefix), names.outbox(prefix)
    group = f"test-{router.name}-{secrets.token_hex(4)}"
    await streams.ensure_group(redis, stream, group, start="new")
    last: Any = await redis.xrevrange(outbox, count=1)
    after = last[0][0].decode() if last else None
    settings = msgspec.structs.replace(load_settings(environ or {}), prefix=prefix)
    state = State(settings=settings, redis=redis, environ=environ)
    async with gateway_for(state):  # ctx.wecom, opened as a service opens it
        started = False
        try:
            await router.startup(state)  # as in a service: shutdown hooks only after a good start
            started = True
            await publish_events(redis, events, app=app, prefix=prefix)
            consumer = Consumer(
                redis,
                stream=stream,
                group=group,
                handler=router.handler(prefix, state=state, max_deliveries=max_deliveries),
                options=ConsumerOptions(
                    concurrency=1,
                    start="new",
                    prefix=prefix,
                    max_deliveries=max_deliveries,
                    claim_idle=0.5,  # a failed delivery is tried again soon
                    handler_timeout=30.0,
                ),
            )
            await consumer.run_burst()
        finally:
            await redis.xgroup_destroy(stream, group)
            await redis.delete(names.retry(stream, group))
            if started:
                await router.shutdown(state)
    produced = await read_outbox(redis, prefix=prefix, after=after)
    errors = await _dead_letters(redis, prefix, group)
    if errors:
        raise DeadLettered(errors, produced)
    return produced


async def _dead_letters(redis: Redis, prefix: str, group: str) -> list[str]:
    """The error lines of the dead letters ``group`` wrote."""
    letters: Any = await redis.xrange(names.deadletter(prefix))
    return [
        fields[b"error"].decode(errors="replace")
        for _, fields in letters
        if fields.get(b"group") == group.encode()
    ]
