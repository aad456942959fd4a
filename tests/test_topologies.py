"""The whole system as real processes on Redis Sentinel and Redis Cluster.

Sentinel: a primary, two replicas and three Sentinels; 300 callbacks at 50/s while the primary
is SIGKILLed (``BUS_MIN_REPLICAS=1``): every callback is acknowledged within WeCom's retries and
gets exactly one reply, and no service is restarted. Cluster: three nodes, ``BUS_PARTITIONS=8``, two
responders and two senders: 40 members × 5 texts, all answered once and in order, the
partitions on several nodes.
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from devkit.embedded_redis import free_port
from shared.bus import names
from tests.system import System, running_system
from tests.topology import Cluster, SentinelSet

pytestmark = pytest.mark.slow


def push_paced(system: System, specs: list[dict[str, Any]], rate: float) -> list[Any]:
    """Push every spec (each retried the way WeCom retries) at ``rate`` per second."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=64) as pool:
        futures: list[Future[Any]] = []
        for i, spec in enumerate(specs):
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
            futures.append(pool.submit(system.push, **spec))
        return [f.result() for f in futures]


def test_sentinel_failover_under_load_loses_and_repeats_nothing(tmp_path: Path) -> None:
    with (
        SentinelSet() as topo,
        running_system(topo.url(), tmp_path, BUS_MIN_REPLICAS="1") as system,
    ):
        specs = [{"from": f"user{i % 30}", "type": "text", "content": f"n{i}?"} for i in range(300)]
        killer = threading.Timer(2.0, topo.kill_primary)  # 100 callbacks in, 200 to go
        old = topo.primary_port()
        killer.start()
        try:
            results = push_paced(system, specs, rate=50)
        finally:
            killer.join()
        assert topo.wait_failover(old) != old
        failed = [r["attempts"] for r in results if not r["ok"]]
        assert failed == [], (
            f"{len(failed)} callbacks never acknowledged, e.g. {failed[:1]}; "
            f"replication now: {topo.replication()}"
        )

        def all_answered() -> bool:
            return sum(len(v) for v in system.text_replies().values()) >= 300

        system.wait_for(all_answered, timeout=60, what="a reply to every callback")
        time.sleep(3)  # room for a duplicate to show up
        counts = collections.Counter(t for texts in system.text_replies().values() for t in texts)
        assert {f"n{i}!" for i in range(300)} == set(counts)
        assert [t for t, n in counts.items() if n > 1] == []
        system.stack.check_alive()  # nobody was restarted: the first processes did it all
        check = system.cli("check", "--redis")
        assert "redis topology: ok (standalone, role master, 1 connected replica(s)" in check.stdout


def test_cluster_with_eight_partitions_answers_every_member_in_order(tmp_path: Path) -> None:
    """Order holds when each predecessor finishes within BUS_ORDER_WAIT; on a loaded test
    machine replies can take seconds, so the wait (and the handler timeout) are generous."""
    with (
        Cluster(3) as topo,
        running_system(
            topo.url, tmp_path, BUS_PARTITIONS="8", BUS_HANDLER_TIMEOUT="30", BUS_ORDER_WAIT="60"
        ) as system,
    ):
        second = {name: free_port() for name in ("responder", "sender")}
        for name, port in second.items():  # a second replica of each consumer
            system.stack.spawn(name, "--host", "127.0.0.1", "--port", str(port), label=f"{name}-2")
        urls = {n: f"http://127.0.0.1:{p}/readyz" for n, p in second.items()}
        system.stack.wait_ready(urls, timeout=60)
        members = [f"user{m}" for m in range(40)]

        def write(member: str) -> bool:  # the next message once WeCom delivered the last one
            return all(
                system.push(**{"from": member, "type": "text", "content": f"{member} m{k}?"})["ok"]
                for k in range(5)
            )

        with ThreadPoolExecutor(max_workers=len(members)) as pool:
            assert all(pool.map(write, members))

        def all_answered() -> bool:
            return sum(len(v) for v in system.text_replies().values()) >= 200

        system.wait_for(all_answered, timeout=60, what="200 replies")
        got = system.text_replies()
        for member in members:
            assert sorted(got[member]) == [f"{member} m{k}!" for k in range(5)], member
        assert system.fake("GET", "/fake/stats")["gettoken"] == {"default": 1}
        nodes = {topo.node_of(names.events(p)).port for p in names.partitions("wecom", 8)}
        assert len(nodes) >= 2
        holding = [
            p
            for p in names.partitions("wecom", 8)
            if topo.node_of(names.events(p)).client().xlen(names.events(p))
        ]
        assert len({topo.node_of(names.events(p)).port for p in holding}) >= 2
        check = system.cli("check", "--redis")
        assert "loaded on each of 3 primaries" in check.stdout, check.stdout + check.stderr
        [layout] = [line for line in check.stdout.splitlines() if "redis topology" in line]
        for node in topo.nodes:
            assert f"127.0.0.1:{node.port} (0 replica(s)) partitions" in layout
        located = sorted(
            int(i)
            for part in layout.split("partitions ")[1:]
            for i in part.split(";")[0].split(")")[0].split(",")
            if i.strip().isdigit()
        )
        assert located == list(range(8))
        for member in members:  # and in the order each member wrote
            assert got[member] == [f"{member} m{k}!" for k in range(5)], member
