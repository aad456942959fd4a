"""``BUS_MIN_REPLICAS``: a batch of writes closed by one ``WAIT`` on its connection, and what
too few replicas make of the batch's results.

``WAIT`` counts the replicas holding the writes made earlier on the same connection, so every
batcher (``shared.bus.scripts`` on one server, ``shared.bus.pinned`` per cluster node) ends its
batch with it and reads its answer last.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

__all__ = ["NotReplicated", "Wait", "check_replicated", "replicated"]

# BUS_MIN_REPLICAS and its timeout (ms): WAIT for that many replicas after the write.
Wait = tuple[int, int]


class NotReplicated(RedisError):
    """The write is on the primary but fewer replicas than asked confirmed it in time."""


def check_replicated(acked: Any, wait: Wait) -> None:
    """Raise NotReplicated unless WAIT's answer ``acked`` reaches ``wait``'s replica count."""
    if int(acked) < wait[0]:
        raise NotReplicated(f"{int(acked)} of {wait[0]} replicas confirmed within {wait[1]} ms")


def replicated(results: list[Any], wait: Wait) -> list[Any]:
    """``results`` of writes and, last, WAIT's answer: each success becomes NotReplicated (or
    the error WAIT itself met) when too few replicas confirmed them."""
    acked = results.pop()
    try:
        if isinstance(acked, BaseException):
            raise acked
        check_replicated(acked, wait)
    except (RedisError, OSError) as exc:
        return [r if isinstance(r, BaseException) else exc for r in results]
    return results
