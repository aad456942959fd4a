"""The record of a request's last send acks its outbox entry in the same script
(``services.sender.records.RECORD_ACK``), on a real Redis: the entry is acked only with its
sent mark, the member's order mark moves and the retry key is cleaned as the consumer's own
commit would, a second consumer finishing the same entry acks nothing twice, a send is marked
even when its entry was acked meanwhile, and without the group the record stands and the ack is
left to the consumer."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from services.sender.records import Records
from shared.bus import names, sendstate
from shared.bus.delivery import AckOffer, Delivery
from shared.bus.scripts import NotReplicated, TickScripts
from shared.schemas.envelope import OutboxEntry, encode_outbox, outbox_entry
from shared.schemas.outbound import decode_send_request
from shared.wecom.client import SendResult
from tests import helpers
from tests.sender_kit import Kit, sender_kit, text

P = "ak"
RID = "req-1"
STREAM = names.outbox(P)
GROUP = names.SENDER_GROUP
RETRY = names.retry(STREAM, GROUP)
ORDER = names.order_done(STREAM, GROUP, "default/alice")


@pytest.fixture
async def kit(redis_url: str) -> AsyncIterator[Kit]:
    async with sender_kit(redis_url) as made:
        yield made


async def delivered(redis: Redis, seq: int) -> Delivery:
    """An outbox entry of member alice (number ``seq``), read by the group: pending, and due
    in the retry key as a deferred delivery would be."""
    await redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    await redis.xadd(STREAM, {"data": b"{}", "okey": "default/alice", "oseq": seq})
    read: Any = await redis.xreadgroup(GROUP, "c1", {STREAM: ">"})
    [(_, [(entry_id, fields)])] = read
    await redis.zadd(RETRY, {entry_id: 1})
    return Delivery(entry_id.decode(), STREAM, fields, 1, AckOffer(GROUP, RETRY))


async def record(
    redis: Redis, delivery: Delivery, msgid: str, wait: tuple[int, int] | None = None
) -> None:
    result = SendResult(msgid=msgid)
    await Records(redis, P, TickScripts(redis), wait)(
        RID, 1, names.sent(P, RID), result, [result], delivery
    )


async def test_the_last_record_acks_the_entry_as_the_consumers_commit_would(
    redis: Redis,
) -> None:
    delivery = await delivered(redis, 3)
    await record(redis, delivery, "m1")
    assert delivery.offer is not None and delivery.offer.answer == 1
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0
    assert await redis.get(names.sent(P, RID)) == b'{"msgid":"m1","response_code":""}'
    state = await sendstate.read(redis, P, RID)
    assert state is not None and (state.status, state.msgid) == ("sent", "m1")
    assert await redis.get(ORDER) == b"3"  # the member's order mark moved
    assert await redis.zscore(RETRY, delivery.entry_id) is None


async def test_a_second_consumer_finishing_the_same_entry_acks_nothing_twice(
    redis: Redis,
) -> None:
    delivery = await delivered(redis, 1)
    await record(redis, delivery, "m1")
    again = Delivery(delivery.entry_id, STREAM, delivery.fields, 2, AckOffer(GROUP, RETRY))
    await record(redis, again, "m2")
    assert again.offer is not None and again.offer.answer == 0  # acked by the first already
    # Both sends reached WeCom: each is counted, the mark holds the last one's msgid.
    assert await redis.get(names.sent(P, RID)) == b'{"msgid":"m2","response_code":""}'
    assert await redis.hget(names.status(P, RID), "try1") == b"2"


async def test_a_send_whose_entry_was_acked_meanwhile_is_still_marked_sent(redis: Redis) -> None:
    delivery = await delivered(redis, 1)
    await redis.xack(STREAM, GROUP, delivery.entry_id)  # e.g. dead-lettered by another consumer
    await record(redis, delivery, "m1")
    assert delivery.offer is not None and delivery.offer.answer == 0
    # A replay of that entry finds the mark and sends nothing again.
    assert await redis.get(names.sent(P, RID)) == b'{"msgid":"m1","response_code":""}'


async def test_without_the_group_the_record_stands_and_the_consumer_acks(redis: Redis) -> None:
    delivery = await delivered(redis, 1)
    await redis.xgroup_destroy(STREAM, GROUP)
    await record(redis, delivery, "m1")
    assert delivery.offer is not None and delivery.offer.answer is None  # the consumer commits
    assert await redis.get(names.sent(P, RID)) == b'{"msgid":"m1","response_code":""}'


async def test_too_few_replicas_raise_and_the_ack_stands_as_a_commits_does(
    redis: Redis,
) -> None:
    delivery = await delivered(redis, 1)
    with pytest.raises(NotReplicated):
        await record(redis, delivery, "m1", wait=(1, 50))  # no replica: too few
    assert delivery.offer is not None and delivery.offer.answer is None  # the delivery failed
    assert await redis.get(names.sent(P, RID)) == b'{"msgid":"m1","response_code":""}'
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0


def text_entry(request_id: str, content: str) -> OutboxEntry:
    """An outbox entry of app "default": a text to alice."""
    body = json.dumps(text("alice", content)).encode()
    request = decode_send_request(body, default_agentid=helpers.AGENT_ID)
    return outbox_entry(
        id=request_id, app="default", trace_id="t", created_at=time.time(),
        request=request, origin="test",
    )  # fmt: skip


async def test_a_members_entries_are_sent_in_order_and_each_acked_once(kit: Kit) -> None:
    ids = []
    for seq in range(1, 13):
        entry = text_entry(f"ord-{seq}", f"n{seq}")
        ids.append(entry.id)
        fields: dict[Any, Any] = {
            "data": encode_outbox(entry), "okey": "default/alice", "oseq": seq,
        }  # fmt: skip
        await kit.redis.xadd(names.outbox(), fields)
    await kit.drain()
    assert [b["text"]["content"] for b in kit.sends()] == [f"n{s}" for s in range(1, 13)]
    done = names.order_done(names.outbox(), GROUP, "default/alice")
    assert await kit.redis.get(done) == b"12"
    assert kit.consumer.stats == {"ok": 12}
    for request_id in ids:
        state = await sendstate.read(kit.redis, kit.settings.prefix, request_id)
        assert state is not None and state.status == "sent"


async def redis_reads(redis: Redis) -> int:
    """Socket reads Redis served so far: about one per write a client made."""
    return int((await redis.info("stats"))["total_reads_processed"])


async def test_at_a_trickle_each_gate_goes_with_the_consumers_next_read(kit: Kit) -> None:
    """A send's gate is queued while the consumer is about to read again: the two go in one
    write, so a send costs Redis two client writes (that one, and the record with the ack)
    where it cost three."""

    async def add(n: int) -> None:  # one client write: the XADD
        entry = text_entry(f"trickle-{n}", f"t{n}")
        await kit.redis.xadd(names.outbox(), {"data": encode_outbox(entry)})

    running = asyncio.create_task(kit.consumer.run())
    try:
        await add(0)  # the token fetched and the scripts loaded
        await helpers.eventually(lambda: len(kit.sends()) == 1)
        await asyncio.sleep(0.2)
        start = await redis_reads(kit.redis)
        await asyncio.sleep(1.2)  # what the consumer's own loops cost, without sends
        idle = await redis_reads(kit.redis) - start - 1
        start = await redis_reads(kit.redis)
        for n in range(1, 13):
            await add(n)
            await asyncio.sleep(0.1)
        used = await redis_reads(kit.redis) - start - 1 - 12 - idle  # this INFO, the XADDs
        assert len(kit.sends()) == 13
    finally:
        kit.consumer.stop()
        await running
    assert [b["text"]["content"] for b in kit.sends()] == [f"t{n}" for n in range(13)]
    # two writes a send and the consumer's own loops' variation (three a send before)
    assert used <= 2.5 * 12
