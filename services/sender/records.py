"""The sender's record of a send WeCom accepted: the attempt counted, the part's sent mark,
and after the last part the request's state (``shared.bus.sendstate``).

One script per send (``sendstate.RECORD``: all or nothing), the records of the sends finishing
in one event-loop tick sent to Redis in one round trip, with the gates of that tick
(``services.sender.gates``). After the last part, when the consumer offers it
(``Delivery.offer``), the same script also acks the outbox entry (:data:`RECORD_ACK`): the
record first, as without the offer (a message WeCom took is marked sent, so a replay of its
entry never sends it again), then the consumer's own commit, which acks only an entry still
pending: the ack follows the sent mark, and a second consumer finishing the same entry acks
nothing twice. With ``wait`` the records have a batch of their own, closed by one WAIT,
and too few replicas raise NotReplicated (the write stands on the primary, the ack with it as a
consumer's commit does; an entry still pending is redelivered, finds the mark and sends
nothing). On Redis Cluster, where the status hash and the marks live in
different slots, the same writes go out as a pipeline, mark before state (a sent mark overrules
a stale state), and the consumer commits as usual.
"""

from __future__ import annotations

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from shared.bus import names, sendstate, streams
from shared.bus.delivery import Delivery
from shared.bus.ordering import order_of
from shared.bus.scripts import Script, TickPipeline, TickScripts, Wait
from shared.connection import is_cluster
from shared.wecom.client import SendResult

__all__ = ["RECORD_ACK", "SENT_TTL", "Records"]

SENT_TTL = 7 * 86_400  # WeCom's recall window is 24 h; the card response_code lives 72 h

# The record of a request's last send and the ack of its outbox entry, in one script: the record
# (sendstate.RECORD's: WeCom took the message, so it is marked sent whoever acks the entry),
# then the consumer's commit itself (streams.COMMIT's text as a function of its own KEYS and
# ARGV, without outputs: nothing unless the entry is still pending, then the member's order
# mark, XACK, the retry key), whose answer it returns.
# KEYS: the commit's three (stream, retry key, order mark), then RECORD's.
# ARGV: the commit's three (group, entry id, order number), then RECORD's.
RECORD_ACK = Script(
    sendstate.RECORD_LUA
    + "local function commit(KEYS, ARGV)\n"
    + streams.COMMIT.text
    + """end
send_record({unpack(KEYS, 4)}, {unpack(ARGV, 4)})
return commit({KEYS[1], KEYS[2], KEYS[3]}, {ARGV[1], ARGV[2], ARGV[3]})
"""
)


class _Sent(msgspec.Struct):
    msgid: str
    response_code: str


class _Whole(msgspec.Struct):
    msgid: str
    msgids: list[str]
    response_code: str = ""


_encode = msgspec.json.Encoder().encode


class Records:
    """``await records(...)``: one send's record. ``ticks``: the gate's batch, shared (not
    used with ``wait``, whose WAIT the gates need not wait for)."""

    def __init__(
        self, redis: Redis, prefix: str, ticks: TickScripts, wait: Wait | None = None
    ) -> None:
        self.prefix = prefix
        self._cluster = is_cluster(redis)
        self._ticks = ticks if wait is None else TickScripts(redis, wait=wait)
        self._pipes = TickPipeline(redis, wait=wait)  # a cluster's: a pipeline per node

    async def __call__(
        self,
        request_id: str,
        part: int,
        mark: str,
        result: SendResult,
        done: list[SendResult] | None,
        delivery: Delivery | None = None,
    ) -> None:
        """Mark part ``part`` sent (its key ``mark``); after the last part, the request
        (``done``: every part's result, in order), and ``delivery``'s ack when it offers it."""
        record = _encode(_Sent(result.msgid, result.response_code))
        whole_key = names.sent(self.prefix, request_id)
        finished: tuple[list[str], str, tuple[str, bytes] | None] | None = None
        if done is not None:
            msgids = [r.msgid for r in done]
            whole = (whole_key, _encode(_Whole(msgids[0], msgids))) if whole_key != mark else None
            finished = (msgids, result.response_code, whole)
        if self._cluster:
            await self._cluster_record(request_id, part, mark, record, finished)
            return
        keys, args = sendstate.record_call(
            self.prefix, request_id, part, (mark, record), SENT_TTL, finished
        )
        if delivery is None or delivery.offer is None or done is None:
            await self._ticks.call(sendstate.RECORD, keys, args)
            return
        offer = delivery.offer
        commit_keys, commit_args = streams.commit_call(
            stream=delivery.stream,
            group=offer.group,
            entry_id=delivery.entry_id,
            outputs=(),
            retry_key=offer.retry_key,
            order=order_of(delivery.fields),
        )
        try:
            answer = await self._ticks.call(
                RECORD_ACK, [*commit_keys, *keys], [*commit_args, *args]
            )
        except ResponseError as exc:
            if not streams.is_nogroup(exc):
                raise
            # The group is gone: the record alone; the consumer's commit meets NOGROUP and heals.
            await self._ticks.call(sendstate.RECORD, keys, args)
            return
        offer.answer = int(answer)

    async def _cluster_record(
        self,
        request_id: str,
        part: int,
        mark: str,
        record: bytes,
        finished: tuple[list[str], str, tuple[str, bytes] | None] | None,
    ) -> None:
        def fill(pipe: Pipeline) -> None:
            pipe.set(mark, record, ex=SENT_TTL)
            sendstate.attempt(pipe, self.prefix, request_id, part)
            if finished is not None:
                msgids, code, whole = finished
                if whole is not None:
                    pipe.set(whole[0], whole[1], ex=SENT_TTL)
                sendstate.sent(pipe, self.prefix, request_id, msgids, code)

        for outcome in await self._pipes.run(fill):
            if isinstance(outcome, Exception):
                raise outcome
