"""Whether the reader waits before its next read (``ConsumerOptions.read_linger``).

Waiting lets entries that trickle in be read, handled and committed together: one read, one
write for their commits (they go with the next read: ``shared.bus.committing``) and two
wake-ups of the process for all of them, where a wake-up costs more CPU than handling an
entry. It pays only when entries are likely to arrive meanwhile. When they arrive further
apart than twice the linger, waiting would mostly add the linger to each entry's latency and
a timer's wake-up to its cost, so the reader reads again at once. The arrival rate is read
from the entry ids, whose first part is the time Redis added the entry, in ms.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.bus.streams import Entry

__all__ = ["Linger"]

_WEIGHT = 0.25  # of the latest read in the smoothed gap between arrivals


class Linger:
    """The reader's linger: ``after(entries, wanted)`` after each read says how long to wait."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._gap_ms = 0.0  # smoothed time between two arrivals; 0 at first: linger
        self._newest_ms = 0  # when the newest entry read so far was added

    def after(self, entries: Sequence[Entry], wanted: int) -> float:
        """The pause before the next read, after one that returned ``entries`` of ``wanted``."""
        if not entries or not self.seconds:
            return 0.0
        newest = int(entries[-1].id.partition("-")[0])
        if self._newest_ms:
            gap = max(newest - self._newest_ms, 0) / len(entries)
            self._gap_ms += (gap - self._gap_ms) * _WEIGHT
        self._newest_ms = max(newest, self._newest_ms)
        if len(entries) >= wanted or self._gap_ms >= 2000 * self.seconds:
            return 0.0  # more are waiting, or the next one is not due within the linger
        return self.seconds
