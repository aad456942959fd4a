"""The process settings every service shares (services/serving.py)."""

from __future__ import annotations

import subprocess
import sys

from services.serving import YOUNG_COLLECTION_THRESHOLD

# Run in a child: settle_heap changes the whole process's collector, never the test runner's.
_CHILD = """
import gc
from services.serving import settle_heap
settle_heap()
frozen, threshold = gc.get_freeze_count(), gc.get_threshold()[0]
cycle = []
cycle.append(cycle)
del cycle
print(frozen, threshold, gc.collect())
"""


def test_settle_heap_freezes_start_up_and_still_collects_cycles() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    frozen, threshold, collected = (int(x) for x in out)
    assert frozen > 1000  # the imported modules' objects: out of every later collection
    assert threshold == YOUNG_COLLECTION_THRESHOLD
    assert collected >= 1  # garbage made after start-up is still found
