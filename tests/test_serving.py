"""The process settings every service shares (services/serving.py)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
import uvicorn

from devkit.embedded_redis import free_port
from services.serving import STARTUP_FAILURE, YOUNG_COLLECTION_THRESHOLD, QuietServer, serve
from tests.helpers import eventually

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


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


async def test_the_quiet_server_serves_checks_once_a_second_and_stops_at_once() -> None:
    ticks: list[float] = []

    class Counted(QuietServer):
        async def on_tick(self, counter: int) -> bool:
            ticks.append(time.monotonic())
            return await super().on_tick(counter)

    port = free_port()
    config = uvicorn.Config(_hello, host="127.0.0.1", port=port, lifespan="off", log_config=None)
    server = Counted(config)
    serving = asyncio.create_task(server.serve())
    async with httpx.AsyncClient() as client:
        await eventually(lambda: server.started, timeout=10)
        answer = await client.get(f"http://127.0.0.1:{port}/")
        assert (answer.status_code, answer.text) == (200, "hi")
        assert b"date" in dict(server.server_state.default_headers)  # renewed at each tick
        await asyncio.sleep(2.5)
        # uvicorn's own server would have checked about 25 times by now
        assert 2 <= len(ticks) <= 5
        stopping = time.monotonic()
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=5)
    assert time.monotonic() - stopping < 0.5  # not at the next tick: at once


def test_serve_exits_with_uvicorns_start_up_failure_code_when_it_cannot_listen() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exited:
            serve(_hello, host="127.0.0.1", port=port, lifespan="off", log_config=None)
    assert exited.value.code == STARTUP_FAILURE == 3
