"""Stopping a consumer (or anything with ``stop()``) gracefully on SIGTERM and SIGINT."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from typing import Protocol

__all__ = ["install_signal_handlers"]


class _Stoppable(Protocol):
    def stop(self) -> None: ...


def install_signal_handlers(
    consumer: _Stoppable, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    """SIGTERM/SIGINT stop ``consumer`` gracefully; a second signal cancels in-flight work."""
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, consumer.stop)
