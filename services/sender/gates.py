"""The sender's gate round trip on Redis Cluster, whose pipeline refuses EVALSHA.

Elsewhere the handler queues the four calls of a send's gate (the sent mark, the attempt
count, the circuit and governor scripts) on one shared pipeline; on a cluster they go out as
concurrent calls instead, each routed to the node holding its keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from redis.asyncio import Redis

from shared.wecom import circuit
from shared.wecom.governor import ACQUIRE

__all__ = ["cluster_gate"]


async def cluster_gate(
    redis: Redis,
    mark: str,
    tries: tuple[str, str],
    gate: tuple[list[str], list[int]],
    gov: tuple[list[str], tuple[int | str, ...]] | None,
) -> tuple[bytes | None, bytes | None, Any, Any]:
    """(sent mark, attempt count, circuit answer, governor answer or 0), concurrently."""
    calls: list[Awaitable[Any]] = [redis.get(mark), redis.hget(*tries), circuit.ADMIT(redis, *gate)]
    if gov is not None:
        calls.append(ACQUIRE(redis, *gov))
    found: list[Any] = await asyncio.gather(*calls)
    return found[0], found[1], found[2], found[3] if gov is not None else 0
