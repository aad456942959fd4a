"""Which partition an event or a send request belongs to (``BUS_PARTITIONS``).

A partition is a set of keys sharing one hash tag (``shared.bus.names.partition``): its events
and outbox streams, their retry zsets, its dead letters, its delayed queue and its dedup marks.

The rule is one stable hash, the same in every process and version::

    partition = crc32(app + "\\0" + member) % BUS_PARTITIONS

* an inbound event: ``member`` is its ``FromUserName``; an event without one (微信客服
  ``kf_msg_or_event``) uses its ``OpenKfId``, and anything with neither uses ``""`` (one fixed
  partition per app). So one member's events of one app always land in the same partition.
* a consumer's outputs go to the outbox of the partition its input came from (a reply stays with
  the member who wrote).
* a request from the send API or ``wecom-bus send``: ``member`` is the ``touser`` field as given
  (a single member: the same partition as that member's events), or ``party:<toparty>`` /
  ``tag:<totag>`` / ``chat:<chatid>`` when there is no ``touser``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

from shared.bus import names

__all__ = ["event_member", "index", "prefix_for", "request_member"]


def index(app: str, member: str, count: int) -> int:
    """The partition (0 … count-1) of ``member``'s traffic in ``app``."""
    if count <= 1:
        return 0
    return zlib.crc32(f"{app}\0{member}".encode()) % count


def prefix_for(prefix: str, count: int, app: str, member: str) -> str:
    """The key prefix of that partition (``prefix`` itself when there is one partition)."""
    return names.partition(prefix, index(app, member, count), count)


def event_member(raw: Mapping[str, Any]) -> str:
    """Whose event this is, for partitioning: FromUserName, else OpenKfId, else ``""``."""
    for field in ("FromUserName", "OpenKfId"):
        value = raw.get(field)
        if isinstance(value, str) and value:
            return value
    return ""


def request_member(request: Any) -> str:
    """Who a send request goes to, for partitioning (see the module docstring)."""
    for field, label in (
        ("touser", ""),
        ("toparty", "party:"),
        ("totag", "tag:"),
        ("chatid", "chat:"),
    ):
        value = getattr(request, field, None)
        if value:
            return f"{label}{value}"
    return ""
