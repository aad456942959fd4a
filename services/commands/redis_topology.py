"""``wecom-bus check --redis`` on Redis Cluster: every primary checked, partitions located.

A cluster client answers INFO and CONFIG per node, so each promise is checked on every primary
(the worst answer is the finding); the project's scripts are loaded on every primary, and each
partition's key groups are probed with one script each (a CROSSSLOT here would be one in
production). The topology finding lists the primaries, their replicas, and which partitions'
keys each node holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError, ResponseError

from services.commands.base import Finding
from shared.bus import names

__all__ = ["cluster_findings"]

_RANK = {"ok": 0, "warning": 1, "error": 2}


class _Node:
    """One node seen through the cluster client: what the per-server probes call."""

    def __init__(self, cluster: RedisCluster, node: ClusterNode) -> None:
        self.cluster, self.node = cluster, node

    async def info(self, section: str) -> Any:
        return await self.cluster.info(section, target_nodes=self.node)

    async def config_get(self, name: str) -> Any:
        return await self.cluster.config_get(name, target_nodes=self.node)


async def _worst(nodes: list[_Node], probe: Callable[[Redis], Awaitable[Finding]]) -> Finding:
    """Run a per-server probe on every primary; the worst finding, naming its node."""
    found = [(n, await probe(cast("Redis", n))) for n in nodes]
    node, worst = max(found, key=lambda pair: _RANK[pair[1].level])
    where = f"{node.node.host}:{node.node.port}"
    text = worst.text if worst.level == "ok" else f"{where}: {worst.text}"
    return worst._replace(text=f"{text} ({len(nodes)} primaries)")


async def _scripts(
    cluster: RedisCluster, scripts: list[Any], groups: dict[str, list[str]], probe: Any
) -> Finding:
    primaries = cluster.get_primaries()
    try:
        for node in primaries:
            for script in scripts:
                await cluster.execute_command("SCRIPT LOAD", script.text, target_nodes=node)
    except ResponseError as exc:
        return Finding("redis scripts", "error", f"a script does not load: {exc}")
    for group, keys in groups.items():
        try:
            await probe(cast("Redis", cluster), keys)
        except RedisError as exc:
            return Finding(
                "redis scripts",
                "error",
                f"the {group} keys cannot be used by one script ({exc}); set BUS_PARTITIONS "
                "above 1 or give BUS_PREFIX a hash tag",
            )
    return Finding(
        "redis scripts",
        "ok",
        f"{len(scripts)} loaded on each of {len(primaries)} primaries; every partition's keys "
        "usable by one script",
    )


async def _layout(cluster: RedisCluster, prefix: str, partitions: int) -> Finding:
    """Primaries, their replicas, and the partitions each primary holds."""
    held: dict[str, list[str]] = {}
    for index, part in enumerate(names.partitions(prefix, partitions)):
        node = cluster.get_node_from_key(names.events(part))
        if node is not None:
            held.setdefault(f"{node.host}:{node.port}", []).append(str(index))
    lines = []
    for node in cluster.get_primaries():
        where = f"{node.host}:{node.port}"
        replication = await cluster.info("replication", target_nodes=node)
        replicas = int(replication.get("connected_slaves", 0))
        parts = ",".join(held.get(where, [])) or "none"
        lines.append(f"{where} ({replicas} replica(s)) partitions {parts}")
    text = f"cluster: {'; '.join(lines)}"
    if len(held) > 1 or partitions == 1:
        return Finding("redis topology", "ok", text)
    return Finding("redis topology", "warning", f"{text}; every partition on one node: no spread")


async def cluster_findings(
    cluster: RedisCluster,
    prefix: str,
    partitions: int,
    probes: dict[str, Any],
) -> list[Finding]:
    """The findings of ``redis_check.findings`` for a cluster (``probes``: its helpers)."""
    await cluster.initialize()
    nodes = [_Node(cluster, n) for n in cluster.get_primaries()]
    groups: dict[str, list[str]] = {}
    for part in names.partitions(prefix, partitions):
        for group, keys in probes["key_groups"](part).items():
            groups[f"{group} ({part})"] = keys
    return [
        await probes["server"](cluster, names.partitions(prefix, partitions)[0]),
        await _scripts(cluster, probes["scripts"](), groups, probes["probe"]),
        await _worst(nodes, probes["memory"]),
        await _worst(nodes, probes["fsync"]),
        await _layout(cluster, prefix, partitions),
    ]
