"""shared.bus.deadletter against a real Redis, with dead letters written by the real runtime."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from shared.bus import names
from shared.bus.deadletter import DeadLetter, DeadLetters
from shared.bus.delivery import Delivery, Output, Reject
from shared.bus.options import ConsumerOptions
from shared.bus.worker import Consumer

P = "dl"
EVENTS = names.events(P)


def rejecting(reason: Callable[[dict[str, object]], str]) -> Callable[[Delivery], object]:
    async def handler(delivery: Delivery) -> list[Output]:
        raise Reject(reason(json.loads(delivery.fields[b"data"])))

    return handler


async def dead_letter(
    redis: Redis, group: str, payloads: list[dict[str, object]], why: str, stream: str = EVENTS
) -> None:
    """Add ``payloads`` to ``stream`` and have ``group`` (new) reject each with ``why``."""
    for payload in payloads:
        await redis.xadd(stream, {"data": json.dumps(payload)})
    await run_group(redis, group, rejecting(lambda p: why.format(**p)), stream)


async def run_group(
    redis: Redis, group: str, handler: Callable[[Delivery], object], stream: str = EVENTS
) -> None:
    consumer = Consumer(
        redis,
        stream=stream,
        group=group,
        handler=handler,  # type: ignore[arg-type]
        options=ConsumerOptions(prefix=P, start="backlog"),
    )
    await consumer.run_burst()


async def test_records_are_typed_with_errcode_advice_and_decoded_data(redis: Redis) -> None:
    advice = "WeCom does not trust the calling IP: add 10.1.2.3 to 企业可信IP."
    await dead_letter(redis, "sender", [{"n": 1}], f"errcode 60020: {advice}")
    letters = DeadLetters(redis, P)
    [letter] = await letters.list()
    assert isinstance(letter, DeadLetter)
    assert (letter.stream, letter.group, letter.attempts) == (EVENTS, "sender", 1)
    assert letter.errcode == 60020 and letter.advice == advice
    assert letter.reason == f"Reject: errcode 60020: {advice}"
    assert letter.data == {"n": 1}
    assert abs(letter.time - time.time()) < 60
    rows: Any = await redis.xrange(EVENTS)
    [(entry_id, _)] = rows
    assert letter.entry_id == entry_id.decode()
    assert await letters.get(letter.id) == letter
    assert await letters.get("1-0") is None
    assert await letters.count() == 1


async def test_a_failure_without_errcode_has_none(redis: Redis) -> None:
    await dead_letter(redis, "team", [{"n": 1}], "poison")
    [letter] = await DeadLetters(redis, P).list()
    assert letter.errcode is None and letter.advice is None and letter.reason == "Reject: poison"


async def test_filters_group_stream_reason_since_and_pages(redis: Redis) -> None:
    await dead_letter(redis, "team", [{"n": n} for n in range(3)], "Timeout number {n}")
    outbox = names.outbox(P)
    await dead_letter(redis, "sender", [{"n": 3}, {"n": 4}], "errcode 81013: nobody", outbox)
    letters = DeadLetters(redis, P)
    assert len(await letters.list()) == 5
    assert sorted(d.data["n"] for d in await letters.list(group="team")) == [0, 1, 2]
    assert [d.data["n"] for d in await letters.list(reason="TIMEOUT NUMBER 1")] == [1]
    assert [d.errcode for d in await letters.list(reason="81013")] == [81013, 81013]
    assert sorted(d.data["n"] for d in await letters.list(stream=outbox)) == [3, 4]
    assert await letters.list(stream=outbox, group="team") == []
    assert await letters.list(since=time.time() + 60) == []
    assert len(await letters.list(since=time.time() - 60)) == 5
    assert await letters.list(limit=0) == []
    first_page = await letters.list(limit=2)
    rest = await letters.list(after=first_page[-1].id, limit=None)
    assert [d.id for d in first_page + rest] == [d.id for d in await letters.list()]


async def test_scan_reads_past_one_page(redis: Redis) -> None:
    await dead_letter(redis, "team", [{"n": n} for n in range(450)], "bad {n}")
    found = await DeadLetters(redis, P).list(limit=None, reason="bad")
    assert sorted(d.data["n"] for d in found) == list(range(450))  # handled concurrently
    ids = [tuple(map(int, d.id.split("-"))) for d in found]
    assert ids == sorted(ids)  # oldest first, across pages


async def test_replay_makes_the_entry_pending_for_the_failing_group_only(redis: Redis) -> None:
    await redis.xadd(EVENTS, {"data": json.dumps({"n": 7})})
    seen: dict[str, list[str]] = {"team": [], "other": []}

    def recording(group: str) -> Callable[[Delivery], object]:
        async def handler(delivery: Delivery) -> list[Output]:
            seen[group].append(delivery.entry_id)
            return []

        return handler

    await run_group(redis, "other", recording("other"))  # another group already handled it
    await run_group(redis, "team", rejecting(lambda p: "poison"))
    letters = DeadLetters(redis, P)
    [letter] = await letters.list()

    result = await letters.replay([letter.id])
    [item] = result.items
    assert (item.outcome, item.group, item.entry_id) == ("pending", "team", letter.entry_id)
    assert result.replayed == [item] and result.missing == []
    assert await letters.count() == 0
    assert (await redis.xpending(EVENTS, "team"))["pending"] == 1
    assert (await redis.xpending(EVENTS, "other"))["pending"] == 0
    assert await redis.xlen(EVENTS) == 1  # nothing added: the original entry is reused
    held: Any = await redis.xpending_range(EVENTS, "team", min="-", max="+", count=10)
    [held] = held
    assert held["consumer"] == b"deadletter-replay" and held["times_delivered"] == 0  # fresh count

    await run_group(redis, "team", recording("team"))
    await run_group(redis, "other", recording("other"))
    assert seen == {"team": [letter.entry_id], "other": [letter.entry_id]}  # other: once only
    assert (await letters.replay([letter.id])).missing == [letter.id]  # replayed once


async def test_replay_of_a_trimmed_entry_adds_the_payload_again(redis: Redis) -> None:
    await dead_letter(redis, "team", [{"n": 1}], "poison")
    letters = DeadLetters(redis, P)
    [letter] = await letters.list()
    await redis.xdel(EVENTS, letter.entry_id)
    [item] = (await letters.replay([letter.id])).items
    assert item.outcome == "readded" and item.entry_id != letter.entry_id
    rows: Any = await redis.xrange(EVENTS)
    [(new_id, fields)] = rows
    assert new_id.decode() == item.entry_id and json.loads(fields[b"data"]) == {"n": 1}
    assert await letters.count() == 0


async def test_replay_to_a_deleted_group_keeps_the_dead_letter(redis: Redis) -> None:
    await dead_letter(redis, "team", [{"n": 1}], "poison")
    await redis.xgroup_destroy(EVENTS, "team")
    letters = DeadLetters(redis, P)
    [letter] = await letters.list()
    [item] = (await letters.replay([letter.id])).items
    assert item.outcome == "nogroup" and (await letters.replay([])).items == []
    assert await letters.list() == [letter]
    assert await redis.xlen(EVENTS) == 1  # nothing added for the other groups to see


async def test_drop_and_bad_ids(redis: Redis) -> None:
    await dead_letter(redis, "team", [{"n": n} for n in range(3)], "poison")
    letters = DeadLetters(redis, P)
    ids = [d.id for d in await letters.list()]
    assert await letters.drop([ids[0], "1-0", ids[0]]) == [ids[0]]
    assert [d.id for d in await letters.list()] == ids[1:]
    with pytest.raises(ValueError, match="'nope' is not a stream entry id"):
        await letters.drop(["nope"])
    with pytest.raises(ValueError, match="not a stream entry id"):
        await letters.get(ids[1] + "\n")
    with pytest.raises(ValueError, match="not a stream entry id"):
        await letters.replay([ids[1], "1-0; FLUSHALL"])
    assert await letters.count() == 2  # a bad id acts on nothing
