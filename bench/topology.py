"""``make bench`` topology section: the ingress on a 3-node cluster and on Sentinel.

Closed-loop ingress throughput (the same pre-built callbacks, each stored once) on a 3-node
Redis Cluster with one partition under a hash-tagged prefix and with ``BUS_PARTITIONS=8``, and
on a Sentinel set (a primary, two replicas) without and with ``BUS_MIN_REPLICAS=1``: what the
spread over nodes gains and what waiting for a replica costs. Topologies come from the same
embedded binary as the tests (``tests/topology.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.ingress import _env, _flush, _load, _serve, summary
from bench.plan import Context
from tests.topology import Cluster, SentinelSet

__all__ = ["run_topology"]

CASES: dict[str, dict[str, str]] = {
    "cluster, 1 partition ({wecom})": {"BUS_PREFIX": "{wecom}"},
    "cluster, 8 partitions": {"BUS_PARTITIONS": "8"},
    "sentinel, BUS_MIN_REPLICAS=0": {},
    "sentinel, BUS_MIN_REPLICAS=1": {"BUS_MIN_REPLICAS": "1"},
}


def _runs(ctx: Context, url: str, ports: list[int], labels: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for label in labels:
        env = {**_env(ctx, url), **CASES[label]}
        with _serve(ctx, "ingress", env, label=label.split(",")[0], pinned=False) as srv:
            for port in ports:  # every callback new again on every node
                _flush(port)
            result = summary(_load(ctx, srv, repeat=False))
        found[label] = {k: result[k] for k in ("rps", "latency_ms", "errors", "completed")}
    return found


def run_topology(ctx: Context, log: Callable[[str], None] = print) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with Cluster(3) as cluster:
        log("  ingress on a 3-node cluster …")
        ports = [n.port for n in cluster.nodes]
        results |= _runs(ctx, cluster.url, ports, [k for k in CASES if k.startswith("cluster")])
    with SentinelSet() as sentinel:
        log("  ingress on Sentinel …")
        primary = [sentinel.primary_port()]
        results |= _runs(ctx, sentinel.url(), primary, [k for k in CASES if k.startswith("sent")])
    return results
