"""REDIS_URL forms, and the one connection factory on real Sentinel and Cluster topologies."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import RedisError

from shared.bus.scripts import Script
from shared.config import load_settings
from shared.connection import connect, parse_redis_url
from shared.errors import ConfigError
from tests.topology import Cluster, SentinelSet


def test_plain_urls_pass_through() -> None:
    for url in ("redis://h:6379/0", "rediss://:pw@h:6380/1", "unix:///tmp/r.sock"):
        target = parse_redis_url(url)
        assert (target.topology, target.url) == ("standalone", url)


def test_sentinel_url() -> None:
    target = parse_redis_url(
        "redis+sentinel://:s3cret-pw@s1:26379,s2,10.0.0.3:26380/mymaster/2?sentinel_password=sp"
    )
    assert target.topology == "sentinel"
    assert target.hosts == (("s1", 26379), ("s2", 26379), ("10.0.0.3", 26380))
    assert (target.service, target.db, target.password) == ("mymaster", 2, "s3cret-pw")
    assert target.sentinel_password == "sp"
    assert not target.tls
    assert "s3cret-pw" not in repr(target) and "s3cret-pw" not in str(target)
    assert parse_redis_url("rediss+sentinel://s1/m").tls


def test_cluster_url() -> None:
    target = parse_redis_url("rediss+cluster://user:pw@n1:7000,n2:7001")
    assert target.topology == "cluster" and target.tls
    assert target.hosts == (("n1", 7000), ("n2", 7001))
    assert (target.username, target.password) == ("user", "pw")
    assert parse_redis_url("redis+cluster://n1").hosts == (("n1", 6379),)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://h:6379", "must start with redis://"),
        ("redis+sentinel://s1:26379", "/<service-name>"),
        ("redis+sentinel://s1:26379/m/x", "database must be a number"),
        ("redis+sentinel://s1:26379/m/0/extra", "/<service-name>"),
        ("redis+cluster://n1:7000/0", "takes no path"),
        ("redis+cluster://n1:port", "must be a number"),
        ("redis+cluster://n1:70000", "1-65535"),
        ("redis+cluster://:pw@n1,,n2", "empty entry"),
    ],
)
def test_bad_urls_name_the_variable(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_redis_url(url)
    assert caught.value.variable == "REDIS_URL"
    assert problem in str(caught.value)
    assert "pw" not in str(caught.value)


def test_settings_accept_every_topology() -> None:
    for url in ("redis+sentinel://s1/m", "redis+cluster://n1:7000,n2:7000"):
        assert load_settings({"REDIS_URL": url}).redis_url == url
    with pytest.raises(ConfigError, match="REDIS_URL"):
        load_settings({"REDIS_URL": "redis+sentinel://s1"})


@pytest.mark.slow
async def test_sentinel_client_follows_a_failover() -> None:
    """The primary is SIGKILLed; the same client object writes to the promoted replica."""
    with SentinelSet() as topo:
        client = connect(topo.url(), socket_timeout=2, socket_connect_timeout=1)
        try:
            await client.set("before", "1")
            assert await client.execute_command("WAIT", 2, 2000) == 2  # type: ignore[no-untyped-call]  # both replicas have it
            old = topo.primary_port()
            topo.kill_primary()
            new = await asyncio.to_thread(topo.wait_failover, old)
            assert new != old
            for _ in range(100):  # the first command after the kill may meet the dead socket
                try:
                    await client.set("after", "2")
                    break
                except (RedisError, OSError) as exc:
                    last = exc
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"no write after failover: {last!r}")
            assert await client.get("before") == b"1"  # acknowledged by WAIT: not lost
            info = await client.info("replication")
            assert info["role"] == "master"
            assert topo.nodes[[n.port for n in topo.nodes].index(new)].client().get("after")
        finally:
            await client.aclose()


@pytest.mark.slow
async def test_cluster_client_routes_by_slot_and_runs_tagged_scripts() -> None:
    script = Script(
        "redis.call('XADD', KEYS[1], '*', 'f', ARGV[1]); return redis.call('INCR', KEYS[2])"
    )
    with Cluster(3) as topo:
        client = connect(topo.url)
        try:
            # Keys spread over the nodes: each reaches the node that owns its slot.
            keys = [f"k{i}" for i in range(30)]
            for key in keys:
                await client.set(key, key)
            assert len({topo.node_of(k).port for k in keys}) == 3
            for key in keys:
                assert topo.node_of(key).client().get(key) == key.encode()
            # A script's keys share a hash tag, so it runs on the node of that slot.
            for tag in ("{p0}", "{p1}", "{p2}", "{p3}"):
                assert await script(client, [f"wecom:{tag}:events", f"wecom:{tag}:n"], ["x"]) == 1
            owners = {topo.node_of(f"wecom:{t}:events").port for t in ("{p0}", "{p1}", "{p2}")}
            assert len(owners) >= 2
            results = await script.run_batch(
                client, [(["wecom:{p0}:events", "wecom:{p0}:n"], ["y"])] * 3
            )
            assert results == [2, 3, 4]  # one connection to the slot's node, in order
        finally:
            await client.aclose()
