"""``make bench`` topology section: a 3-node cluster and a Sentinel set, ingress and end to end.

Four cases: a 3-node Redis Cluster with one partition under a hash-tagged prefix and with
``BUS_PARTITIONS=8``, and a Sentinel set (a primary, two replicas, three Sentinels) without and
with ``BUS_MIN_REPLICAS=1``: what the spread over nodes gains and what waiting for a replica
costs. For each:

* the ingress alone, closed loop (the same pre-built callbacks, each stored once);
* end to end (``bench.e2e``): ingress, responder and sender as real processes and the fake
  WeCom, ``topology_rate`` callbacks a second for ``topology_duration`` seconds (open loop),
  each followed to its message/send; CPU per message counts the services and every Redis node
  (replicas included, Sentinels not).

Topologies come from the same embedded binary as the tests (``tests/topology.py``); every
process is stopped when its case ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from bench import e2e
from bench.callbacks import Credentials
from bench.ingress import _env, _flush, _load, _serve, summary
from bench.plan import Context
from devkit.embedded_redis import EmbeddedRedis
from tests.topology import Cluster, SentinelSet

__all__ = ["CASES", "run_topology"]

CASES: dict[str, dict[str, str]] = {
    "cluster, 1 partition ({wecom})": {"BUS_PREFIX": "{wecom}"},
    "cluster, 8 partitions": {"BUS_PARTITIONS": "8"},
    "sentinel, BUS_MIN_REPLICAS=0": {},
    "sentinel, BUS_MIN_REPLICAS=1": {"BUS_MIN_REPLICAS": "1"},
}
SERVICES = ("fake-wecom", "ingress", "responder", "sender")


def _ingress(ctx: Context, url: str, ports: list[int], label: str) -> dict[str, Any]:
    """The ingress alone, closed loop, every callback new on every node."""
    env = {**_env(ctx, url), **CASES[label]}
    with _serve(ctx, "ingress", env, label=label.split(",")[0], pinned=False) as srv:
        for port in ports:
            _flush(port)
        result = summary(_load(ctx, srv, repeat=False))
    return {k: result[k] for k in ("rps", "latency_ms", "errors", "completed")}


def _end_to_end(
    ctx: Context, url: str, nodes: Sequence[EmbeddedRedis], label: str
) -> dict[str, Any]:
    name = "e2e-" + "".join(c if c.isalnum() else "-" for c in label)
    with e2e.system(ctx, url, nodes, SERVICES, name, **CASES[label]) as system:
        creds = Credentials.from_env(system.env)
        e2e.warm_up(ctx, system, creds)
        plan = ctx.plan
        # A message not out 20 s after the last callback counts as not delivered.
        return e2e.e2e_rate(
            ctx, system, nodes, creds, plan.topology_rate, 0, plan.topology_duration, 20.0
        )


def _cases(
    ctx: Context,
    url: str,
    nodes: Sequence[EmbeddedRedis],
    primaries: list[int],
    labels: list[str],
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    ingress, end_to_end = {}, {}
    for label in labels:
        started = time.perf_counter()
        log(f"  {label}: ingress alone …")
        ingress[label] = _ingress(ctx, url, primaries, label)
        log(f"  {label}: end to end at {ctx.plan.topology_rate} msg/s …")
        end_to_end[label] = _end_to_end(ctx, url, nodes, label)
        log(f"  {label}: done in {time.perf_counter() - started:.0f} s")
    return ingress, end_to_end


def run_topology(ctx: Context, log: Callable[[str], None] = print) -> dict[str, Any]:
    with Cluster(3) as cluster:
        ports = [n.port for n in cluster.nodes]
        labels = [k for k in CASES if k.startswith("cluster")]
        ingress, end_to_end = _cases(ctx, cluster.url, cluster.nodes, ports, labels, log)
    with SentinelSet() as sentinel:
        primary = [sentinel.primary_port()]
        labels = [k for k in CASES if k.startswith("sentinel")]
        found = _cases(ctx, sentinel.url(), sentinel.nodes, primary, labels, log)
    return {
        "ingress": ingress | found[0],
        "e2e": {
            "rate": ctx.plan.topology_rate,
            "seconds": ctx.plan.topology_duration,
            "runs": end_to_end | found[1],
        },
    }
