"""What every HTTP server here shares: ``uvicorn_options(**own)``, ``QuietServer`` and
``serve(app, ...)``.

Logging is the project's (``shared.logs``, configured before the server starts), so uvicorn
configures none and writes no line per request; answers carry no ``server`` header. Each server
adds what is its own (proxy headers, timeouts, lifespan) at its call site.

uvicorn's server wakes its process ten times a second to see whether it should stop and, once a
second, to renew its ``date`` header. ``QuietServer`` wakes once a second for the header and
at once when told to stop. An idle service then wakes a tenth as often for it; on a VM a
wake-up after an idle spell costs a few hundred microseconds of CPU (``make bench`` counts
them per message).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from typing import Any

import uvicorn

__all__ = ["QuietServer", "serve", "settle_heap", "uvicorn_options"]

TICK = 1.0  # seconds between the server's checks when nothing tells it to stop
STARTUP_FAILURE = 3  # the exit code of uvicorn.run when the server could not start

# Container allocations between two young-generation collections (CPython's default is 700).
# A service allocates and frees thousands of short-lived objects per message; nearly all die by
# reference counting, so collecting less often finds the same cycles for less work.
YOUNG_COLLECTION_THRESHOLD = 10_000

SHARED: dict[str, Any] = {"access_log": False, "log_config": None, "server_header": False}


def uvicorn_options(**own: Any) -> dict[str, Any]:
    """Keywords for ``uvicorn.run`` or ``uvicorn.Config``: the shared ones, then ``own``."""
    return {**SHARED, **own}


def settle_heap() -> None:
    """Call once in a service's process, when it is built and about to serve (its entry point;
    never in a library or a test process).

    ``gc.freeze()`` moves every object alive now (modules, classes, settings: the bulk of the
    heap, never garbage) out of the collector's reach, so later collections walk only what the
    service allocated since; the young generation is collected less often. With both, the
    sender's CPU per send in ``python -m bench.sender_cpu`` fell by about a tenth (three runs
    alternated: 0.47 → 0.39, 0.47 → 0.42, 0.57 → 0.50 ms). Cycles are still collected.
    """
    gc.collect()  # what start-up left behind, before the rest is frozen
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


class QuietServer(uvicorn.Server):
    """``uvicorn.Server`` that checks once a second (``TICK``) instead of ten times, and at once
    when ``should_exit`` is set (by its signal handlers or by the code running it)."""

    def __init__(self, config: uvicorn.Config) -> None:
        self._wake: asyncio.Future[None] | None = None
        super().__init__(config)

    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        wake = self._wake
        if value and wake is not None and not wake.done():
            wake.get_loop().call_soon_threadsafe(_settle, wake)

    async def main_loop(self) -> None:
        # uvicorn's on_tick renews the date header when its counter is a multiple of ten.
        loop = asyncio.get_running_loop()
        should_exit = await self.on_tick(0)
        while not should_exit:
            self._wake = loop.create_future()
            timer = loop.call_later(TICK, _settle, self._wake)
            try:
                if not self._should_exit:
                    await self._wake
            finally:
                timer.cancel()
                self._wake = None
            should_exit = await self.on_tick(0)


def _settle(wake: asyncio.Future[None]) -> None:
    if not wake.done():
        wake.set_result(None)


def serve(app: Any, *, host: str, port: int, **options: Any) -> None:
    """``uvicorn.run(app, ...)`` on a ``QuietServer`` (one process, no reload): exits with
    uvicorn's start-up failure code when the server could not start."""
    server = QuietServer(uvicorn.Config(app, host=host, port=port, **options))
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
