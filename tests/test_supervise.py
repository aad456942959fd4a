"""Background tasks cannot die silently: a failing one is logged, restarted with backoff, and
/readyz answers 503 until it runs again. And serve_consumer: HTTP, consumer and tasks together."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from starlette.applications import Starlette

from devkit.embedded_redis import free_port
from services.health import health_routes
from services.runtime import Supervisor, serve_consumer
from shared.bus.delivery import Delivery, Output
from shared.bus.options import ConsumerOptions
from shared.bus.worker import Consumer


async def test_a_failing_background_task_is_logged_restarted_and_readyz_is_503_meanwhile(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor, stop = Supervisor(backoff_base=0.5), asyncio.Event()
    failed, running_again, release = asyncio.Event(), asyncio.Event(), asyncio.Event()
    runs = 0

    async def scheduler(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            await redis.eval("return redis.call('NOSUCHCOMMAND')", 0)  # a script error
        if runs == 2:
            await release.wait()
            failed.set()
            raise ResponseError("OOM command not allowed when used memory > 'maxmemory'")
        running_again.set()
        await stop.wait()

    app = Starlette(routes=health_routes(redis, lambda: supervisor.healthy))
    restarts = "wecom_background_task_restarts_total"
    before = REGISTRY.get_sample_value(restarts, {"task": "scheduler"}) or 0.0
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://svc"
    ) as client:
        with caplog.at_level(logging.ERROR, logger="wecom_bus.runtime"):
            supervisor.start(scheduler, stop)
            release.set()
            await asyncio.wait_for(failed.wait(), 10)
            await asyncio.sleep(0)
            down = await client.get("/readyz")
            assert (down.status_code, supervisor.down) == (503, frozenset({"scheduler"}))
            assert "background task is down" in down.text
            await asyncio.wait_for(running_again.wait(), 10)
            assert (await client.get("/readyz")).status_code == 200
            stop.set()
            await asyncio.wait_for(supervisor.wait(), 5)

    failures = [r for r in caplog.records if r.getMessage() == "background task failed; restarting"]
    errors = [r.exc_info[1] for r in failures if r.exc_info]
    assert [type(e) for e in errors] == [ResponseError, ResponseError]
    assert "OOM" in str(errors[1])
    assert runs == 3
    assert REGISTRY.get_sample_value(restarts, {"task": "scheduler"}) == before + 2
    assert REGISTRY.get_sample_value("wecom_background_task_up", {"task": "scheduler"}) == 1


async def test_a_task_that_returns_early_is_restarted_and_stop_ends_all(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor, stop = Supervisor(backoff_base=0.01), asyncio.Event()
    runs = 0

    async def refresher(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs >= 3:
            await stop.wait()

    supervisor.start(refresher, stop, name="gauges")
    while runs < 3:
        await asyncio.sleep(0.01)
    assert supervisor.healthy
    stop.set()
    await asyncio.wait_for(supervisor.wait(), 5)
    ended = [r for r in caplog.records if "ended by itself" in r.getMessage()]
    assert len(ended) == 2 and all(r.__dict__["task"] == "gauges" for r in ended)


async def test_a_consumer_service_answers_quietly_and_everything_stops_with_the_consumer(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    async def handler(delivery: Delivery) -> list[Output]:
        return []

    options = ConsumerOptions(prefix="t", block_ms=100, start="backlog")
    consumer = Consumer(redis, stream="t:served", group="g", handler=handler, options=options)
    stopped = asyncio.Event()

    async def gauges(stop: asyncio.Event) -> None:
        await stop.wait()
        stopped.set()

    port = free_port()
    app = Starlette(routes=health_routes(redis, lambda: consumer.healthy))
    serving = asyncio.create_task(
        serve_consumer(consumer, app, host="127.0.0.1", port=port, background=[gauges])
    )
    try:
        with caplog.at_level(logging.DEBUG):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                async with asyncio.timeout(20):
                    while True:
                        with contextlib.suppress(httpx.TransportError):
                            if (ready := await client.get("/readyz")).status_code == 200:
                                break
                        await asyncio.sleep(0.05)
    finally:
        consumer.stop()
        await asyncio.wait_for(serving, 20)
    assert stopped.is_set()
    assert "server" not in ready.headers  # no server names itself (services/serving.py)
    assert not [r for r in caplog.records if r.name == "uvicorn.access"]
