"""Which bus layouts a service refuses at start (partitions, hash tags, topology, bots).

Each check raises one ConfigError naming the variable to change, so a layout that would make
every multi-key script fail (CROSSSLOT), put every partition in one slot, or leave entries on
keys no consumer reads stops the service with one line instead of failing later.
"""

from __future__ import annotations

import re

from shared.errors import ConfigError

__all__ = ["check_partitions", "check_prefix", "check_topology"]

# A key prefix, optionally holding one Redis Cluster hash tag ({wecom}: every key in one slot).
_PREFIX = re.compile(r"(?=.)(?![:])[\w.:-]*(?:\{[\w.:-]+\})?[\w.:-]*(?<![:])", re.ASCII)


def check_prefix(prefix: str) -> str:
    """BUS_PREFIX: a key prefix with at most one hash tag; returned as given."""
    if len(prefix) > 64 or not _PREFIX.fullmatch(prefix):
        raise ConfigError(
            "BUS_PREFIX",
            "1-64 of letters, digits, '_', '.', '-', ':' (not first or last), with at most one "
            "non-empty hash tag in braces, e.g. wecom, {wecom} or app{x}",
        )
    return prefix


def check_partitions(partitions: int, prefix: str) -> None:
    """BUS_PARTITIONS: at most 1024, and not with a hash-tagged prefix."""
    if partitions > 1024:
        raise ConfigError("BUS_PARTITIONS", "must be 1-1024")
    if partitions > 1 and "{" in prefix:
        raise ConfigError(
            "BUS_PARTITIONS",
            f"is {partitions} but BUS_PREFIX {prefix!r} has a hash tag, which puts every "
            "partition in one slot: use an untagged prefix (e.g. wecom) with partitions",
        )


def check_topology(topology: str, *, partitions: int, prefix: str) -> None:
    """On Redis Cluster: one slot per script (a tagged prefix or partitions)."""
    if topology != "cluster":
        return
    if partitions == 1 and "{" not in prefix:
        raise ConfigError(
            "BUS_PREFIX",
            "on Redis Cluster give BUS_PREFIX a hash tag (e.g. {wecom}) or set "
            "BUS_PARTITIONS above 1: the bus's multi-key scripts need one slot",
        )
