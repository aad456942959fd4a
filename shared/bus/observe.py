"""Reading the groups' shared state into gauges: lag, pending, and what trimming took unread.

``MAXLEN ~`` trims the oldest entries whether or not every group has read them. A group whose
last-delivered id is older than the stream's first entry has lost entries it never read: the
stream's removed entries (entries-added − length) minus what the group read (entries-read).
Redis's own lag then counts those lost entries as still to read, so while the group is behind
the trim point its lag gauge shows the entries actually left (the stream's length).

Every replica reads the same Redis state and exports the same values; aggregate with
``max by (stream, group)``.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from shared.bus import metrics, streams

__all__ = ["observe_groups", "sweep_consumers"]

log = logging.getLogger("wecom_bus.bus")

_trimmed_seen: dict[tuple[str, str], int] = {}  # last value per (stream, group), this process


async def observe_groups(redis: Redis, *stream_keys: str) -> None:
    """Read lag, pending and trimmed-unread of every group of ``stream_keys`` into the gauges."""
    for stream in stream_keys:
        info = await streams.stream_info(redis, stream)
        for group in await streams.groups(redis, stream):
            labels = (stream, group.name)
            metrics.GROUP_PENDING.labels(*labels).set(group.pending)
            lag = _lag(stream, group, info)
            if lag is not None:
                metrics.GROUP_LAG.labels(*labels).set(lag)
            metrics.GROUP_TRIMMED_UNREAD.labels(*labels).set(_trimmed_seen.get(labels, 0))


def _lag(stream: str, group: streams.GroupInfo, info: streams.StreamInfo | None) -> int | None:
    """The entries left for ``group`` to read, net of those trimming took.

    Redis's lag (entries-added − entries-read) keeps counting entries trimmed unread. Where the
    true lag is known (the group is behind the trim point: the whole stream; or it has read the
    newest entry: 0) the difference is what trimming took; elsewhere the last such figure seen.
    """
    raw = group.lag
    if raw is None and info is not None and group.entries_read is not None:
        raw = info.entries_added - group.entries_read
    true: int | None = None
    if info is not None and info.first_id is not None:
        if streams.id_key(group.last_delivered_id) < streams.id_key(info.first_id):
            true = info.length
        elif group.last_delivered_id == info.last_id:
            true = 0
    if raw is not None and true is not None:
        _report_trimmed(stream, group.name, max(raw - true, 0))
        return true
    if raw is None:
        return None
    return max(raw - _trimmed_seen.get((stream, group.name), 0), 0)


def _report_trimmed(stream: str, group: str, lost: int) -> None:
    before = _trimmed_seen.get((stream, group), 0)
    if lost > before:
        log.warning(
            "trimming removed entries the group had not read; raise BUS_STREAM_MAXLEN "
            "or scale the group",
            extra={"stream": stream, "group": group, "trimmed_unread": lost, "new": lost - before},
        )
    _trimmed_seen[(stream, group)] = max(lost, before)


async def sweep_consumers(redis: Redis, stream: str, group: str, *, idle: float, keep: str) -> None:
    """Delete the group's consumers idle ``idle`` seconds with nothing pending (not ``keep``)."""
    removed = await streams.remove_idle_consumers(
        redis, stream, group, idle_ms=int(idle * 1000), keep=keep
    )
    if removed:
        log.info(
            "removed idle consumers with nothing pending",
            extra={"stream": stream, "group": group, "consumers": removed},
        )
