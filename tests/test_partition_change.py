"""Changing BUS_PARTITIONS on a live system, step by step as docs/operations.md says.

Real processes on one embedded Redis (untagged prefix): callbacks in flight under
``BUS_PARTITIONS=1`` (message/send slowed down so the outbox has pending entries, and one reply
refused by WeCom so a dead letter exists), then the documented procedure: stop the ingress,
wait until the group gauges and the delayed gauge read 0 for one refresh, restart every
service with ``BUS_PARTITIONS=4``, start the ingress, and more callbacks. Every callback gets
exactly one reply, nothing lands in the old layout after the switch, and the old layout's dead
letter is listed with the old setting.
"""

from __future__ import annotations

import collections
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from shared.bus import names
from tests.system import System, running_system

pytestmark = pytest.mark.slow

GAUGES = ("wecom_stream_group_lag", "wecom_stream_group_pending", "wecom_sender_delayed")
REFRESH = 5.0  # the services refresh these gauges every 5 s
NOBODY = "nobody-here"  # not a member: WeCom refuses the reply (81013), a dead letter


def push_all(system: System, specs: list[dict[str, Any]]) -> None:
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda spec: system.push(**spec), specs))
    assert all(r["ok"] for r in results), [r for r in results if not r["ok"]][:1]


def delivered(system: System) -> collections.Counter[str]:
    """How many times each text reached its member."""
    return collections.Counter(
        m["body"]["text"]["content"]
        for m in system.sends()
        if m["status"] == "delivered" and m["body"].get("msgtype") == "text"
    )


def gauges(system: System) -> dict[str, float]:
    """The drain gauges of the responder and the sender, as a scraper reads them."""
    found: dict[str, float] = {}
    for service in ("responder", "sender"):
        text = httpx.get(system.url(service, "/metrics"), timeout=10).text
        for line in text.splitlines():
            if line.startswith(GAUGES):
                name, value = line.rsplit(" ", 1)
                found[name] = float(value)
    return found


def drained(system: System) -> bool:
    found = gauges(system)
    seen = {name.split("{")[0] for name in found}
    streams = {name.split('stream="')[1].split('"')[0] for name in found if 'stream="' in name}
    return (
        seen == set(GAUGES)
        and {names.events(), names.outbox()} <= streams
        and not any(found.values())
    )


def drained_twice(system: System) -> bool:
    """At 0, and again after the next refresh: a first 0 may predate the last entries."""
    if not drained(system):
        return False
    time.sleep(REFRESH + 0.5)
    return drained(system)


def stop(system: System, *services: str) -> None:
    for name, process in list(system.stack.children):
        if name in services:
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) in (0, -signal.SIGTERM), name
            system.stack.children.remove((name, process))


def start(system: System, *services: str) -> None:
    for name in services:  # on the same ports: the fake WeCom calls the ingress there
        system.stack.spawn(name, "--host", "127.0.0.1", "--port", str(system.ports[name]))
    system.stack.wait_ready({n: system.url(n, "/readyz") for n in services}, timeout=60)


def groups(client: redis.Redis, stream: str) -> dict[str, tuple[int, int]]:
    infos: list[dict[str, Any]] = client.xinfo_groups(stream)
    return {g["name"].decode(): (int(g["pending"]), int(g["lag"] or 0)) for g in infos}


def test_partitions_changed_by_the_documented_procedure_lose_and_repeat_nothing(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    before = [{"from": f"user{i % 20}", "type": "text", "content": f"a{i}?"} for i in range(40)]
    after = [{"from": f"user{i % 20}", "type": "text", "content": f"b{i}?"} for i in range(20)]
    # A short drain on SIGTERM: what a stopped consumer leaves pending stays in the old layout
    # unless step 2 waited for it (the test fails without step 2). A long handler timeout: slow
    # answers are not cut short and resent with the duplicate check.
    with running_system(
        redis_url, tmp_path, BUS_DRAIN_TIMEOUT="0.3", BUS_HANDLER_TIMEOUT="20"
    ) as system:
        # Under BUS_PARTITIONS=1, WeCom answers message/send slowly: replies pile up.
        delay = {"delay": 1.0, "count": 30, "path": "message/send"}
        system.fake("POST", "/fake/faults", json=delay)
        push_all(system, [*before, {"from": NOBODY, "type": "text", "content": "dead?"}])

        # 1. Stop the writes: the ingress goes (nothing else writes here).
        stop(system, "ingress")
        in_flight = groups(client, names.outbox()).get("sender", (0, 0))
        assert sum(in_flight) > 0, "nothing was in flight when the writes stopped"

        # 2. Let the responder and sender finish: every group's lag and pending and the delayed
        #    queue at 0, and still 0 after the gauges' next refresh.
        system.wait_for(lambda: drained_twice(system), timeout=60, what="the gauges at 0")
        for stream in (names.events(), names.outbox()):  # what the gauges said, in Redis
            assert set(groups(client, stream).values()) == {(0, 0)}, stream
        assert client.zcard(names.delayed()) == 0
        old_added = {
            s: client.xinfo_stream(s)["entries-added"] for s in (names.events(), names.outbox())
        }

        # 3. BUS_PARTITIONS for every service at once; restart them all. 4. The ingress again.
        stop(system, "responder", "sender")
        system.env["BUS_PARTITIONS"] = "4"  # the stack starts its children with this env
        start(system, "responder", "sender", "ingress")
        push_all(system, after)

        expected = {s["content"].replace("?", "!") for s in [*before, *after]}
        system.wait_for(lambda: expected <= set(delivered(system)), timeout=60, what="every reply")
        time.sleep(1.0)  # room for a reply sent twice to show up
        counts = delivered(system)
        assert set(counts) == expected  # the dead letter's reply never reached anyone
        assert [text for text, n in counts.items() if n > 1] == []
        assert system.fake("GET", "/fake/stats")["by_status"].get("suppressed", 0) == 0

        # The new callbacks went to the partitions, none to the old layout.
        parts = names.partitions("wecom", 4)
        assert sum(client.xlen(names.events(p)) for p in parts) == len(after)
        assert {s: client.xinfo_stream(s)["entries-added"] for s in old_added} == old_added

        # The old layout's dead letter: listed with the old setting, not with the new one.
        old = system.cli("deadletter", "list", env={**system.env, "BUS_PARTITIONS": "1"})
        assert old.returncode == 0, old.stderr
        [letter] = old.stdout.splitlines()
        assert f"{names.outbox()}/sender" in letter and "81013" in letter, letter
        new = system.cli("deadletter", "list")
        assert new.returncode == 0 and new.stdout == "", new.stdout + new.stderr
    client.close()
