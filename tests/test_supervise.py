"""Background tasks cannot die silently: a failing one is logged, restarted with backoff, and
/readyz answers 503 until it runs again."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from starlette.applications import Starlette

from services.health import health_routes
from services.runtime import Supervisor


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
