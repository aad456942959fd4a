"""The sender's ``observe`` task: the delayed queue's size and the circuits into the gauges,
and a Redis failure seen by the Supervisor (logged, marked down, restarted), not swallowed."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import REGISTRY
from redis.asyncio import Redis

from devkit.embedded_redis import free_port
from services.runtime import Supervisor
from services.sender.__main__ import observer
from shared.bus import delayed, names
from shared.wecom import circuit
from tests import helpers


def gauge(name: str, labels: dict[str, str] | None = None) -> float | None:
    return REGISTRY.get_sample_value(name, labels or {})


async def test_observe_shows_the_delayed_queue_and_the_circuits(
    redis: Redis, redis_url: str
) -> None:
    settings = helpers.settings(redis_url)
    part = names.partitions(settings.prefix, settings.partitions)[0]
    for i in range(3):
        await delayed.schedule(redis, part, b"entry-%d" % i, time.time() + 60, member_id=f"r{i}")
    await circuit.trip(
        redis,
        settings.prefix,
        "default",
        reason="config",
        errcode=40001,
        advice="fix the secret",
        probe=False,
        waits=[60.0],
        now=time.time(),
    )
    supervisor, stop = Supervisor(), asyncio.Event()
    supervisor.start(observer(settings, redis, ["default"], every=0.05), stop)
    try:
        await helpers.eventually(lambda: gauge("wecom_sender_delayed") == 3)
        await helpers.eventually(
            lambda: gauge("wecom_sender_circuit", {"app": "default", "state": "open"}) == 1
        )
        assert supervisor.healthy
    finally:
        stop.set()
        await supervisor.wait()


async def test_a_redis_failure_reaches_the_supervisor(redis_url: str) -> None:
    settings = helpers.settings(redis_url)
    gone = Redis(port=free_port(), socket_connect_timeout=0.5)  # nobody listens there
    restarts = "wecom_background_task_restarts_total"
    before = gauge(restarts, {"task": "observe"}) or 0.0
    supervisor, stop = Supervisor(backoff_base=0.05, backoff_cap=0.1), asyncio.Event()
    supervisor.start(observer(settings, gone, ["default"], every=0.05), stop)
    try:
        await helpers.eventually(lambda: "observe" in supervisor.down)  # waiting to be restarted
        assert not supervisor.healthy
        await helpers.eventually(
            lambda: (gauge(restarts, {"task": "observe"}) or 0.0) >= before + 2
        )
    finally:
        stop.set()
        await supervisor.wait()
        await gone.aclose()
