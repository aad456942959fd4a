"""Redis Cluster batches: each node's commands on one connection of that node.

A cluster client takes a pooled connection of the key's node for every command and refuses
EVALSHA in its pipelines, so a batch of script calls would cost a connection and a round trip
each. Here the commands are grouped by the node that serves their first key, and each node's
group goes out on one connection of that node, in one write; the groups run concurrently.

``BUS_MIN_REPLICAS`` needs this too: ``WAIT`` counts the replicas holding the writes made
earlier *on the same connection* (Valkey answers a WAIT on a connection that wrote nothing at
once, counting every replica), so each node's group is closed by its own ``WAIT``.

Answers are parsed with the cluster client's callbacks, as its own pipeline does; errors are
returned in place. A command answered ``MOVED`` did not run and is sent once more after the
slot map is read again; ``ASK``, ``CLUSTERDOWN`` or a lost connection (whose commands may have
run) are returned to the caller, whose entry is not acknowledged (503 to WeCom, a consumer's
retry), and the slot map is read again before the next call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from shared.bus.replicas import Wait, replicated

__all__ = ["collector", "run_pinned"]

Command = tuple[tuple[Any, ...], Mapping[str, Any]]  # (args, options), as a pipeline stacks them

_REROUTE = (MovedError, AskError, ClusterDownError, TryAgainError)
_LOST = (ConnectionError, TimeoutError, OSError)
_collector: Redis | None = None


def collector() -> Pipeline:
    """A pipeline that only collects commands (``command_stack``); it is never executed."""
    global _collector
    if _collector is None:
        _collector = Redis()  # never connects: nothing is sent through it
    return _collector.pipeline(transaction=False)


async def run_pinned(
    cluster: RedisCluster, commands: Sequence[Command], wait: Wait | None = None
) -> list[Any]:
    """Run ``commands`` (each keyed: its first argument after the name is a key), each node's
    on one connection of that node, with ``wait`` closed by one ``WAIT`` there; one result or
    error per command, in order. Too few replicas turn a node's successful results into
    ``NotReplicated`` errors. A command answered ``MOVED`` (it did not run) is sent once more
    to the slot's new owner."""
    results = await _run(cluster, commands, wait)
    moved = [i for i, r in enumerate(results) if isinstance(r, MovedError)]
    if moved:
        again = await _run(cluster, [commands[i] for i in moved], wait)
        for i, result in zip(moved, again, strict=True):
            results[i] = result
    return results


async def _run(cluster: RedisCluster, commands: Sequence[Command], wait: Wait | None) -> list[Any]:
    await cluster.initialize()
    groups: dict[str, tuple[ClusterNode, list[int]]] = {}
    for i, (args, _) in enumerate(commands):
        node = cluster.get_node_from_key(_key(args))
        if node is None:
            raise ClusterDownError(f"no node serves the slot of {_key(args)!r}")
        groups.setdefault(node.name, (node, []))[1].append(i)
    results: list[Any] = [None] * len(commands)

    async def one(node: ClusterNode, which: list[int]) -> None:
        extra = 0 if wait is None else 1
        try:
            answers = await _on_node(cluster, node, [commands[i] for i in which], wait)
        except _LOST as exc:  # this node's commands fail; the other nodes' stand
            answers = [exc] * (len(which) + extra)
        if wait is not None:
            answers = replicated(answers, wait)
        for i, answer in zip(which, answers, strict=True):
            results[i] = answer

    await asyncio.gather(*(one(node, which) for node, which in groups.values()))
    return results


def _key(args: Sequence[Any]) -> Any:
    scripted = str(args[0]).upper() in ("EVAL", "EVALSHA")
    if len(args) < 2 or (scripted and (len(args) < 4 or int(args[2]) < 1)):
        raise ValueError(f"{args[0]} without a key: no node to send it to")
    return args[3] if scripted else args[1]


async def _on_node(
    cluster: RedisCluster, node: ClusterNode, commands: Sequence[Command], wait: Wait | None
) -> list[Any]:
    stack = [*commands] if wait is None else [*commands, (("WAIT", *wait), {})]
    connection = node.acquire_connection()
    try:
        await connection.send_packed_command(connection.pack_commands(a for a, _ in stack))
        answers: list[Any] = []
        for args, options in stack:
            try:
                answers.append(await node.parse_response(connection, args[0], **options))
            except ResponseError as exc:
                answers.append(exc)
    except (*_LOST, asyncio.CancelledError) as exc:
        await connection.disconnect()  # half-read answers must not reach the next caller
        if not isinstance(exc, asyncio.CancelledError):
            await _reread_slots(cluster)
        raise
    finally:
        node.release(connection)
    if any(isinstance(a, _REROUTE) for a in answers):
        await _reread_slots(cluster)
    return answers


async def _reread_slots(cluster: RedisCluster) -> None:
    """Learn the slots again (a failover, a resharding): the next call goes to the new owner."""
    try:
        await cluster.nodes_manager.initialize()
    except (*_LOST, ResponseError):
        pass  # the next call tries again
