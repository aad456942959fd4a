"""The per-app circuit against the fake WeCom: 45009 and configuration errors pause only the
affected app, nothing is dead-lettered, and once the cause clears every message leaves once."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from shared.bus import names
from shared.wecom import circuit
from tests.sender_kit import Kit, sender_kit, text


@pytest.fixture
async def kit(redis_url: str, redis: Any) -> AsyncIterator[Kit]:
    # Waits long enough that even a starved machine finishes the first burst inside them (the
    # test reads the paused state right after it), short enough to keep the suite quick.
    async with sender_kit(redis_url, waits=(2.0, 4.0), probe_interval=2.0) as made:
        yield made


def gauge(app: str, state: str) -> float | None:
    return REGISTRY.get_sample_value("wecom_sender_circuit", {"app": app, "state": state})


def opened(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("circuit open")]


def closed(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("circuit closed")]


async def queue_both_apps(kit: Kit, n: int) -> None:
    """One message of app default, sent alone (so the injected fault meets it), then ``n - 1``
    more of default and ``n`` of hr."""
    await kit.put(text("alice", "default-0"))
    await kit.consumer.run_burst()
    for i in range(1, n):
        await kit.put(text("alice", f"default-{i}"))
    for i in range(n):
        await kit.put(text("bob", f"hr-{i}", app="hr"))


def contents(kit: Kit, app: str) -> list[str]:
    return sorted(b["text"]["content"] for b in kit.sends(app=app))


@pytest.mark.parametrize("errcode", [45009, 60020, 40056, 48002, 301002, 50003])
async def test_an_app_wide_refusal_pauses_that_app_only(
    kit: Kit, errcode: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "wecom_bus.sender")
    kit.fault(errcode)
    await queue_both_apps(kit, 5)
    await kit.consumer.run_burst()
    # hr kept sending; default is paused with its messages parked, not dead
    assert contents(kit, "hr") == sorted(f"hr-{i}" for i in range(5))
    assert contents(kit, "default") == []
    state = await circuit.read(kit.redis, "wecom", "default")
    # open, or already probing on a slow machine: the wait is short here
    assert (state.state != "closed", state.errcode, state.level) == (True, errcode, 1)
    assert state.since is not None and state.until is not None and state.until > state.since
    assert state.reason == ("rate_limited" if errcode == 45009 else "config")
    assert state.advice
    assert (await circuit.read(kit.redis, "wecom", "hr")).state == "closed"
    assert gauge("default", "open") == 1 and gauge("default", "closed") == 0
    assert len(opened(caplog)) == 1
    # the cause clears (the fault was one answer): the probe succeeds, everything leaves once
    await kit.drain()
    assert contents(kit, "default") == sorted(f"default-{i}" for i in range(5))
    assert len(kit.sends(app="default")) == 5
    assert await kit.redis.xlen(names.deadletter()) == 0
    assert (await circuit.read(kit.redis, "wecom", "default")).state == "closed"
    assert gauge("default", "closed") == 1
    assert len(opened(caplog)) == 1 and len(closed(caplog)) == 1


async def test_rate_limit_waits_escalate_while_the_probe_is_refused(
    kit: Kit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "wecom_bus.sender")
    kit.fault(45009, count=2)  # the send and the first probe are refused
    await kit.put(text("alice", "m0"))
    await kit.drain()
    assert [b["text"]["content"] for b in kit.sends()] == ["m0"]
    assert len(kit.sends("faulted")) == 2
    # one line per change: opened at the first wait, reopened at the next, then closed
    assert [getattr(r, "level", None) for r in opened(caplog)] == [1, 2]
    waits = [r.until - r.created for r in opened(caplog)]  # type: ignore[attr-defined]
    assert waits[0] < waits[1]
    assert len(closed(caplog)) == 1
    assert await kit.redis.xlen(names.deadletter()) == 0


async def test_a_config_error_stays_open_until_a_probe_succeeds(kit: Kit) -> None:
    kit.fault(60020, count=4)
    for i in range(4):
        await kit.put(text("alice", f"m{i}"))
    await kit.consumer.run_burst()
    state = await circuit.read(kit.redis, "wecom", "default")
    assert state.state == "open" and state.reason == "config"
    assert "IP" in (state.advice or "")
    # one probe per interval: while refused, only the probe reaches WeCom
    await kit.drain()
    assert len(kit.sends("faulted")) == 4
    assert sorted(b["text"]["content"] for b in kit.sends()) == ["m0", "m1", "m2", "m3"]
    assert await kit.redis.xlen(names.deadletter()) == 0


async def trip_config(kit: Kit, now: float) -> bool:
    return await circuit.trip(
        kit.redis,
        "wecom",
        "default",
        reason="config",
        errcode=48002,
        advice="grant it",
        probe=False,
        waits=[10.0],
        now=now,
    )


async def test_read_shows_probing_once_the_wait_is_over(kit: Kit) -> None:
    assert await circuit.read(kit.redis, "wecom", "default") == circuit.CircuitState(app="default")
    now = time.time()
    assert await trip_config(kit, now)
    state = await circuit.read(kit.redis, "wecom", "default", now=now + 1)
    assert state.state == "open" and state.until == pytest.approx(now + 10, abs=0.01)
    assert (state.errcode, state.advice, state.reason) == (48002, "grant it", "config")
    assert (await circuit.read(kit.redis, "wecom", "default", now=now + 11)).state == "probing"
    # a send admitted before the trip, refused too, changes nothing: no second log line
    assert not await trip_config(kit, now + 1)
